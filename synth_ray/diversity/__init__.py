"""The embedding diversity filter's pure parts: embedding model, index, batch decisions,
partition routing. No Ray here; `synth_ray.runtime.diversity` puts them on actors."""

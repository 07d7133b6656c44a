"""What a finished output folder offers its readers: the dataset card (card.py) and rows picked
by an SQL condition (rows.py, `synth-ray inspect`)."""

"""Self-Instruct's parsers and filters on hand-made completions, malformed ones included."""

from __future__ import annotations

import pytest

from synth_ray.methods.instruction_filters import (
    RougePool,
    heuristic_drop,
    parse_numbered_list,
    rouge_l,
)
from synth_ray.methods.self_instruct import parse_instance


def test_rouge_l_known_values():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("a b c d", "x y z") == 0.0
    # LCS "a c" = 2; precision 2/3, recall 2/2 -> F = 0.8
    assert rouge_l("a b c", "a c") == pytest.approx(0.8)
    assert rouge_l("", "anything") == 0.0


def test_pool_similarity_and_growth():
    pool = RougePool(["Write a poem about the sea."])
    assert pool.max_similarity("Write a poem about the sea!") == 1.0
    assert pool.max_similarity("List three capital cities in Asia.") < 0.3
    pool.add("List three capital cities in Asia.")
    assert pool.max_similarity("List three capital cities in Europe.") > 0.7


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("Write a short story about a brave mouse.", None),
        ("Hi", "length"),
        (" ".join(["word"] * 200), "length"),
        ("Draw a picture of a cat using ASCII.", "unsupported_task"),
        ("Describe the image in the input.", "unsupported_task"),
        ("Summarize the attached file in one paragraph.", "unsupported_task"),
        ("- Write a haiku about rain today", "starts_with_punctuation"),
        ("Écris un poème sur la mer s'il te plaît", "non_english"),
    ],
)
def test_heuristics(instruction, reason):
    assert heuristic_drop(instruction, min_words=3, max_words=150) == reason


def test_parse_numbered_list_continuation_and_wrapping():
    completion = "Give three tips for saving money.\n10. Translate the sentence\ninto French.\n11) Name a fruit.\n\n12."
    assert parse_numbered_list(completion) == [
        "Give three tips for saving money.",
        "Translate the sentence into French.",
        "Name a fruit.",
    ]
    assert parse_numbered_list("") == []
    assert parse_numbered_list("   \n\n") == []


@pytest.mark.parametrize(
    ("text", "classification", "expected"),
    [
        (
            "Example 1\nInput: 5 kg\nOutput: 11 pounds\nExample 2\nInput: 1 kg\nOutput: 2.2 pounds",
            False,
            ("5 kg", "11 pounds"),
        ),
        ("Output: Drink water and sleep well.", False, ("", "Drink water and sleep well.")),
        (
            "Class label: positive\nSentence: What a lovely day.\nClass label: negative\nSentence: Awful.",
            True,
            ("Sentence: What a lovely day.", "positive"),  # the paper keeps the field name
        ),
        ("I cannot help with that.", False, None),
        ("Input: same\nOutput: same", False, None),
        ("Class label:\nSentence: nothing", True, None),
        # issue 12, fix 1: the input is everything before "Output:", whatever its field name
        ("List: [3,1,2]\nOutput: [1,2,3]", False, ("List: [3,1,2]", "[1,2,3]")),
        ("Input 1: 2 + 2\nOutput 1: 4\nInput 2: 3 + 3\nOutput 2: 6", False, ("2 + 2", "4")),
        ("Example 1\nWord: cat\nOutput:", False, None),  # an incomplete instance
        ("Input: Translate this:\nOutput: Traduce esto", False, None),  # input ends with ":"
    ],
)
def test_parse_instance(text, classification, expected):
    assert parse_instance(text, classification) == expected


def test_truncated_completion_loses_its_last_instance():
    from synth_ray.methods.self_instruct import parse_instances

    text = "Example 1\nInput: 5 kg\nOutput: 11 pounds\nExample 2\nInput: 1 kg\nOutput: 2.2 po"
    assert parse_instances(text, False, truncated=False)[-1] == ("1 kg", "2.2 po")
    assert parse_instances(text, False, truncated=True) == [("5 kg", "11 pounds")]
    assert parse_instance("Input: 1 kg\nOutput: 2.2 po", False, truncated=True) is None


def test_chat_preamble_and_truncated_item_are_not_instructions():
    from synth_ray.engine.requests import EngineResult
    from synth_ray.methods.base import Candidate
    from synth_ray.methods.self_instruct import InstructionGeneration

    text = (
        "Sure! Here are some more tasks:\n"
        "9. Summarize the plot of a novel in two sentences.\n"
        "10. Explain how vaccines train the immune system.\n"
        "11. Write a haiku about"
    )
    assert parse_numbered_list(text)[0] == "Summarize the plot of a novel in two sentences."
    # without a preamble, the text before the first number continues the prompt's last item
    assert parse_numbered_list("Plan a trip to Rome.\n10. Name three rivers.") == [
        "Plan a trip to Rome.",
        "Name three rivers.",
    ]
    method = InstructionGeneration()
    outcome = method.finish(Candidate("r", "s"), EngineResult("r", text, 10, 64, "length"))
    assert outcome.row["instructions"] == [
        "Summarize the plot of a novel in two sentences.",
        "Explain how vaccines train the immune system.",
    ]


def test_three_word_instructions_are_dropped_like_the_paper():
    from synth_ray.methods.self_instruct import SelfInstructConfig

    si = SelfInstructConfig()
    assert heuristic_drop("Write a poem.", si.min_words, si.max_words) == "length"
    assert heuristic_drop("Write a short poem.", si.min_words, si.max_words) is None


def test_stages_use_the_papers_sampling_not_the_jobs():
    from synth_ray.engine.requests import SamplingSpec
    from synth_ray.methods.self_instruct import (
        ClassificationCheck,
        InstanceGeneration,
        InstructionGeneration,
    )

    job = SamplingSpec(temperature=0.9, top_p=0.9, max_tokens=160)
    check = ClassificationCheck().stage_sampling(job)
    assert (check.temperature, check.max_tokens, check.stop) == (0.0, 3, ("\n", "Task"))
    instance = InstanceGeneration("m").stage_sampling(job)
    assert (instance.temperature, instance.max_tokens) == (0.0, 160)
    assert instance.stop == ("Example 6", "Task:")  # max_instances_to_generate=5
    assert InstanceGeneration("m").stage_sampling(SamplingSpec(0.9, 0.9, 1024)).max_tokens == 350
    generation = InstructionGeneration().stage_sampling(job)
    assert (generation.temperature, generation.top_p) == (0.9, 0.9)
    assert "16." in generation.stop


FIVE_EXAMPLES = "".join(f"Example {i}\nList: [{i}, 0]\nOutput: [0, {i}]\n\n" for i in range(1, 6))


def test_up_to_five_instances_per_instruction_each_a_row_and_accounted():
    """The paper keeps up to 5 instances from one greedy completion (max_instances_to_generate);
    each is a row with its own id, and the unit's accounting counts exactly the rows returned."""
    from synth_ray.engine.requests import EngineResult, SamplingSpec
    from synth_ray.io.inputs import Document
    from synth_ray.methods.base import Dropped, Kept
    from synth_ray.methods.self_instruct import InstanceGeneration
    from synth_ray.plan import WorkUnit
    from synth_ray.runtime.units import PendingUnit, collect_rows

    method = InstanceGeneration("m", max_instances=3)
    assert method.stage_sampling(SamplingSpec(0.9, 0.9, 160)).stop == ("Example 4", "Task:")
    docs = [Document(i, f"i{i}", "Sort the list.", extra={"round": 0}) for i in range(3)]
    candidates = [c for d in docs for c in method.expand(d)]
    texts = [FIVE_EXAMPLES, "Input: x\nOutput: y", "no instance here"]
    pending = PendingUnit(WorkUnit(0, "u", 0, 3, 15), candidates, [])
    for candidate, text in zip(candidates, texts, strict=True):
        result = EngineResult(candidate.row_id, text, 10, 20, "stop")
        pending.add_result(method, candidate, result)
    first = pending.outcomes[candidates[0].row_id]
    assert [type(o) for o in first] == [Kept, Kept, Kept]  # five written, three asked for
    rows = [o.row for o in first]
    assert [(r["instance"], r["input"], r["output"]) for r in rows] == [
        (0, "List: [1, 0]", "[0, 1]"),
        (1, "List: [2, 0]", "[0, 2]"),
        (2, "List: [3, 0]", "[0, 3]"),
    ]
    assert len({r["id"] for r in rows}) == 3
    assert [r["n_output_tokens"] for r in rows] == [20, 0, 0]  # the completion counted once
    assert pending.outcomes[candidates[2].row_id] == [Dropped("unparsable_instance")]
    collected = collect_rows(pending, annotate_nn=False)
    stats = collected.stats
    assert (stats.rows_in, stats.rows_out, sum(stats.dropped.values())) == (5, 4, 1)


@pytest.mark.parametrize("outcomes", [0, 4])
def test_a_method_returning_outside_its_width_errors_its_row(outcomes):
    from synth_ray.engine.requests import EngineResult
    from synth_ray.methods.base import Candidate, Errored, Kept
    from synth_ray.methods.self_instruct import InstanceGeneration
    from synth_ray.runtime.units import completion_outcomes

    class Broken(InstanceGeneration):
        def finish(self, candidate, result):
            return [Kept({"id": str(i)}) for i in range(outcomes)]

    candidate = Candidate("r", "s", width=3, exact_width=False)
    got = completion_outcomes(Broken("m"), candidate, EngineResult("r", "t", 1, 1, "stop"))
    assert len(got) == 1 and isinstance(got[0], Errored) and got[0].stage == "parse"

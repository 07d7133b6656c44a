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


# Completions the embedded model wrote under `self_instruct.constrain` (greedy, presence 1.5)
CONSTRAINED_INSTANCES = {
    False: [
        (
            "Example 1\nInput: 25, k = 3\nOutput: 77\n\nExample 2\nInput: 10, n = 10\nOutput: 100",
            [("25, k = 3", "77"), ("10, n = 10", "100")],
        ),
        (
            'Example 1\nOutput: "The text I\'m providing is not a recipe"\n\nExample 2\n'
            "Output: Sentence 4\n\nExample 3\nOutput: Sentence 4",
            [("", '"The text I\'m providing is not a recipe"'), ("", "Sentence 4")],
        ),
    ],
    True: [
        (
            "Class label: positive\nSentence: The staff were friendly.\nClass label: negative\n"
            "Sentence: We waited an hour.",
            [
                ("Sentence: The staff were friendly.", "positive"),
                ("Sentence: We waited an hour.", "negative"),
            ],
        ),
        ("Class label: ethical", [("", "ethical")]),
    ],
}


def _instances_as_written(text: str, classification: bool) -> list[tuple[str, str]]:
    """The (input, output) pairs of a constrained completion, read off its lines (no field
    holds a marker, so every marker starts an instance), valid and distinct as the paper's
    filters keep them: what `parse_instances` must return."""
    import re

    from synth_ray.methods.self_instruct import _valid

    if classification:
        found = [
            ((m.group(2) or "").strip(), m.group(1).strip())
            for m in re.finditer(r"Class label: ([^\n]*)(?:\n(?!Class label: )([^\n]*))?", text)
        ]
    else:
        found = [
            ((m.group(1) or "").strip(), m.group(2).strip())
            for m in re.finditer(r"Example \d+\n(?:Input: ([^\n]*)\n)?Output: ([^\n]*)", text)
        ]
    kept: list[tuple[str, str]] = []
    for instance in found:
        if _valid(*instance) and instance not in kept:
            kept.append(instance)
    return kept


@pytest.mark.parametrize("classification", [False, True])
def test_every_constrained_instance_completion_parses_and_its_first_survives_a_cut(
    classification,
):
    """`self_instruct.constrain`: every string of the format parses into exactly the
    instances written (drawn from the regex itself, the longest ones included); it stays
    within its computed length; and cut anywhere past max_tokens characters (a token is at
    least one), the parser's truncation rule still keeps the first instance."""
    import random
    import re

    from regex_strings import longest, strings

    from synth_ray.methods.self_instruct import instance_format, parse_instances

    max_tokens = 350
    form = instance_format(classification, max_tokens, 5)
    language = re.compile(form.regex)
    for text, expected in CONSTRAINED_INSTANCES[classification]:
        assert language.fullmatch(text), text
        assert parse_instances(text, classification, truncated=False) == expected
    outside = [
        "Sure, here are two examples:\n\n**Task 1: Convert Celsius**",
        "Example 1\nInput: a: b\nOutput: c",  # a colon would open another field
        "Example 1\nOutput: An Example 2 of it",  # the parser splits on "Example"
        "Example 6\nOutput: yes",  # past max_instances, the paper's stop string
        "Class label: yes\nClass label: no\nClass label: a\nClass label: b\nClass label: c\n"
        "Class label: d",  # six
        "Class label: yes\nClauss label 2018-07-23",  # "C" opens the next label, not an input
    ]
    assert not any(language.fullmatch(t) for t in outside)
    assert form.longest == longest(form.regex)
    rng = random.Random(0)
    for text in strings(form.regex, 300, seed=1 + classification):
        written = _instances_as_written(text, classification)
        assert parse_instances(text, classification, truncated=False) == written, text
        if len(text) > max_tokens and written:
            # cut where max_tokens tokens end at the earliest (a character each), or later
            cuts = {max_tokens + i for i in range(16)} | {rng.randrange(max_tokens, len(text))}
            for cut in sorted(c for c in cuts if c < len(text)):
                cut_parse = parse_instances(text[:cut], classification, truncated=True)
                assert cut_parse[:1] == written[:1], (cut, text)
    single = instance_format(classification, 64, 1)
    assert single.longest <= 63 and "Example 2" not in single.regex
    with pytest.raises(ValueError):
        instance_format(classification, 20, 5)


def test_constrain_decodes_the_check_into_yes_or_no_and_instances_by_task_kind(embedded_model):
    """The classification check answers Yes or No; each instance request carries its task
    kind's format to the engine (one stage, two formats); without constrain, nothing."""
    from synth_ray.engine.prompts import PromptRenderer
    from synth_ray.engine.requests import Constraint, SamplingSpec
    from synth_ray.io.inputs import Document
    from synth_ray.methods.self_instruct import (
        ClassificationCheck,
        InstanceGeneration,
        instance_format,
    )
    from synth_ray.plan import WorkUnit
    from synth_ray.runtime.units import UnitBuilder

    job = SamplingSpec(0.7, 0.5, 1024)
    check = ClassificationCheck(constrain=True).stage_sampling(job)
    assert check.constraint == Constraint("choice", choices=("Yes", "No"))
    assert ClassificationCheck().stage_sampling(job).constraint is None
    docs = [
        Document(0, "a", "Sort the list.", extra={"is_classification": False}),
        Document(1, "b", "Is the review positive?", extra={"is_classification": True}),
    ]
    renderer = PromptRenderer.from_model(embedded_model)
    for constrain in (True, False):
        method = InstanceGeneration("m", constrain_within=1024 if constrain else None)
        sampling = method.stage_sampling(job)
        pending = UnitBuilder(method, renderer, 2048, sampling, 0).build(
            WorkUnit(0, "u", 0, 2, 10), docs
        )
        formats = [r.sampling.constraint for r in pending.requests]
        if constrain:  # the stage's budget: the paper's 350, below the job's 1024
            assert formats == [
                Constraint("regex", instance_format(kind, 350, 5).regex) for kind in (False, True)
            ]
        else:
            assert formats == [None, None]


def test_constrain_is_refused_where_no_instance_fits(tmp_path):
    from conftest import REPO

    from synth_ray.config import validate_config
    from synth_ray.errors import ConfigError

    def job(sampling):
        return {
            "method": "self_instruct",
            "output": {"path": str(tmp_path / "out")},
            "sampling": sampling,
            "self_instruct": {
                "seed_path": str(REPO / "examples" / "seed_tasks.jsonl"),
                "constrain": True,
            },
        }

    assert validate_config(job({"max_tokens": 64})).section.constrain
    with pytest.raises(ConfigError, match="sampling.max_tokens 20 is too small for an instance"):
        validate_config(job({"max_tokens": 20}))
    with pytest.raises(ConfigError, match="ignore_eos would write past the format"):
        validate_config(job({"max_tokens": 64, "ignore_eos": True}))

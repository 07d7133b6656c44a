"""Prompts of the `metamath` method (Yu et al. 2023, "MetaMath: Bootstrap Your Own Mathematical
Questions for Large Language Models", arXiv 2309.12284; github.com/meta-math/MetaMath at
fe667b1, folder code_for_generating_data/).

    python -c "from synth_ray.methods.metamath_prompts import TEMPLATES; print(sorted(TEMPLATES))"

- `rephrase`: configs/rephrase_cot_gsm8k.txt verbatim (its 8 examples), wrapped as
  code/main_rephrase_question.py wraps it: `{prompt}\\n\\nQuestion: {question}\\nRephrase the
  above question: ` (we leave out the trailing space).
- `sv_rewrite`: configs/sv_rewrite_question_prompt_gsm8k.txt verbatim, wrapped as
  code/main_self_verification.py does: `... Question: {question} The answer is {answer}.\\n
  Result: ` (we write `\\nResult:`, without the stray space before it and after it).
- `fobar` and `sv`: the questions code/main_backward_reasoning.py builds for GSM8K (`x`, no
  `### ` prefix): the masked question, a newline and "If we know the answer to the above
  question is {answer}, what is the value of unknown variable x?"; the SV statement and " What
  is the value of unknown variable x?".
- `instruction`: the answer stage's line before its examples, self_improve's INSTRUCTION.
BACKWARD_FEW_SHOT is ours: MetaMath answers FOBAR/SV questions with its own long GSM8K
exemplars (configs/fobar_cot_gsm8k.txt, sv_cot_gsm8k.txt, thousands of tokens); we answer them
with self_improve's three exemplar problems turned backward, in MetaMath's style ("...so we can
write: ... The value of x is N.") but ending in `#### N` like every self_improve rationale.
"""

from __future__ import annotations

from synth_ray.methods.self_improve import INSTRUCTION

REPHRASE_EXAMPLES = (
    "You are an AI assistant to help me rephrase questions.\n"
    "Follow the given examples.\n"
    "\n"
    "Question: Angelo and Melanie want to plan how many hours over the next week they "
    "should study together for their test next week. They have 2 chapters of their "
    "textbook to study and 4 worksheets to memorize. They figure out that they should "
    "dedicate 3 hours to each chapter of their textbook and 1.5 hours for each worksheet."
    " If they plan to study no more than 4 hours each day, how many days should they plan"
    " to study total over the next week if they take a 10-minute break every hour, "
    "include 3 10-minute snack breaks each day, and 30 minutes for lunch each day?\n"
    "Rephrase the above question: Angelo and Melanie need to study 2 chapters in their "
    "textbook and 4 worksheets for their upcoming test. They have planned to dedicate 3 "
    "hours for each chapter and 1.5 hours for each worksheet. They can study for a "
    "maximum of 4 hours each day, taking into account 10-minute breaks every hour, 3 "
    "10-minute snack breaks per day, and 30 minutes for lunch. How many days do they need"
    " to study in total over the next week to complete their study plan?\n"
    "\n"
    "Question: Leah had 32 chocolates and her sister had 42. If they ate 35, how many "
    "pieces do they have left in total?\n"
    "Rephrase the above question: If Leah had 32 chocolates and her sister had 42, and "
    "they both consumed 35 chocolates, what is the total number of chocolates that they "
    "have left?\n"
    "\n"
    "Question: Olivia has $23. She bought five bagels for $3 each. How much money does "
    "she have left?\n"
    "Rephrase the above question: What is the amount of money that Olivia has left after "
    "purchasing five bagels for $3 each, if she initially had $23?\n"
    "\n"
    "Question: There were nine computers in the server room. Five more computers were "
    "installed each day, from monday to thursday. How many computers are now in the "
    "server room?\n"
    "Rephrase the above question: If there were initially nine computers in the server "
    "room and five more computers were added each day from Monday to Thursday, what is "
    "the current total number of computers in the server room?\n"
    "\n"
    "Question: Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On "
    "wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?\n"
    "Rephrase the above question: After losing 23 golf balls on Tuesday and an additional"
    " 2 on Wednesday, how many golf balls does Michael have left if he initially had 58 "
    "golf balls?\n"
    "\n"
    "Question: Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 "
    "lollipops. How many lollipops did Jason give to Denny?\n"
    "Rephrase the above question: If Jason initially had 20 lollipops and now has 12 "
    "after giving some to Denny, how many lollipops did he give to Denny?\n"
    "\n"
    "Question: Sam bought a dozen boxes, each with 30 highlighter pens inside, for $10 "
    "each box. He rearranged five of these boxes into packages of six highlighters each "
    "and sold them for $3 per package. He sold the rest of the highlighters separately at"
    " the rate of three pens for $2. How much profit did he make in total, in dollars?\n"
    "Rephrase the above question: Sam purchased 12 boxes, each containing 30 highlighter "
    "pens, at $10 per box. He repackaged five of these boxes into sets of six "
    "highlighters and sold them for $3 per set. He sold the remaining highlighters "
    "individually at a rate of three pens for $2. What is the total profit he made in "
    "dollars?\n"
    "\n"
    "Question: There are 15 trees in the grove. Grove workers will plant trees in the "
    "grove today. After they are done, there will be 21 trees. How many trees did the "
    "grove workers plant today?\n"
    "Rephrase the above question: If there were initially 15 trees in the grove and the "
    "grove workers are planning to plant more trees today, resulting in a total of 21 "
    "trees, how many trees did the workers plant today?"
)

SV_REWRITE_EXAMPLES = (
    "You are an AI assistant to help me rewrite question into a declarative statement "
    "when its answer is provided.\n"
    "Follow the given examples and rewrite the question.\n"
    "\n"
    "Question: How many cars are in the parking lot? The answer is 5.\n"
    "Result: There are 5 cars in the parking lot.\n"
    "\n"
    "Question: How many trees did the grove workers plant today? The answer is 6.\n"
    "Result: The grove workers planted 6 trees today.\n"
    "\n"
    "Question: If they ate 35, how many pieces do they have left in total? The answer is "
    "39.\n"
    "Result: They have 39 pieces left in total if they ate 35.\n"
    "\n"
    "Question: How many lollipops did Jason give to Denny? The answer is 8.\n"
    "Result: Jason gave 8 lollipops to Denny.\n"
    "\n"
    "Question: How many toys does he have now? The answer is 9.\n"
    "Result: He now has 9 toys.\n"
    "\n"
    "Question: How many computers are now in the server room? The answer is 29.\n"
    "Result: There are 29 computers now in the server room.\n"
    "\n"
    "Question: How many golf balls did he have at the end of wednesday? The answer is 33."
    "\n"
    "Result: He had 33 golf balls at the end of Wednesday.\n"
    "\n"
    "Question: How much money does she have left? The answer is 8.\n"
    "Result: She has 8 money left."
)

# Template name -> text; `{name}` placeholders filled by methods/templating.fill.
TEMPLATES = {
    "rephrase": REPHRASE_EXAMPLES + "\n\nQuestion: {question}\nRephrase the above question:",
    "sv_rewrite": SV_REWRITE_EXAMPLES + "\n\nQuestion: {question} The answer is {answer}.\nResult:",
    "fobar": "{question}\nIf we know the answer to the above question is {answer}, what is the "
    "value of unknown variable {variable}?",
    "sv": "{statement} What is the value of unknown variable {variable}?",
    "instruction": INSTRUCTION,
}
# Placeholders each template must keep when overridden.
REQUIRED = {
    "rephrase": {"question"},
    "sv_rewrite": {"question", "answer"},
    "fobar": {"question", "answer"},
    "sv": {"statement"},
    "instruction": set(),
}
# The labels the model may echo before its reply (the prompt ends with them).
ECHOED_LABELS = ("Rephrase the above question:", "Result:")

# self_improve's FEW_SHOT problems, one number masked as {variable}: `masked_question` (for
# FOBAR, with the original answer), `statement` (for SV: the question sentence rewritten with
# that answer), and one rationale for both, which finds the masked `value`.
BACKWARD_FEW_SHOT = [
    {
        "masked_question": "A baker makes 12 muffins per tray and bakes 4 trays. She sells "
        "{variable} muffins. How many muffins are left?",
        "statement": "A baker makes 12 muffins per tray and bakes 4 trays. She sells "
        "{variable} muffins. There are 18 muffins left.",
        "answer": "18",
        "rationale": "She bakes 12 * 4 = 48 muffins. After selling {variable}, 48 - {variable} "
        "are left. We know 18 are left, so we can write: 48 - {variable} = 18. Solving for "
        "{variable}, we get: {variable} = 30. The value of {variable} is 30.",
        "value": "30",
    },
    {
        "masked_question": "Tom reads {variable} pages a day. How many days does he need for "
        "a 120-page book?",
        "statement": "Tom reads {variable} pages a day. He needs 8 days for a 120-page book.",
        "answer": "8",
        "rationale": "He needs 120 / {variable} days. We know he needs 8 days, so we can write: "
        "120 / {variable} = 8. Solving for {variable}, we get: {variable} = 120 / 8 = 15. "
        "The value of {variable} is 15.",
        "value": "15",
    },
    {
        "masked_question": "A ticket costs $7 for adults and $4 for children. What do 2 adults "
        "and {variable} children pay in total?",
        "statement": "A ticket costs $7 for adults and $4 for children. 2 adults and "
        "{variable} children pay 26 dollars in total.",
        "answer": "26",
        "rationale": "Adults pay 2 * 7 = 14 dollars. Children pay {variable} * 4 = 4{variable} "
        "dollars. In total they pay 14 + 4{variable} dollars. We know the total is 26, so we "
        "can write: 14 + 4{variable} = 26. Solving for {variable}, we get: 4{variable} = 12, "
        "{variable} = 3. The value of {variable} is 3.",
        "value": "3",
    },
]

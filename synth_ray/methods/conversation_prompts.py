"""The prompts of method `conversation`, each quoted from where its paper's authors published it.

    python -c "from synth_ray.methods.conversation_prompts import *; print(ULTRACHAT_USER_SIMULATOR)"

- UltraChat (Ding et al. 2023) released no generation code. Its user-simulator prompts were
  published by the authors in thunlp/UltraChat issue #22 (dingn42, 2023-07-06), one example
  per sector; the prompt is "appended to the dialogue history" so the simulator does not swap
  roles. `ULTRACHAT_USER_SIMULATOR` is Sector 1's ("Questions about the World"), verbatim.
  How the history was written out before it was not published: `TRANSCRIPT_ROLES` (ours).
  UltraChat's prompts for opening questions were not published either: `OPENER` is ours.
- Baize (Xu et al. 2023): `BAIZE_SELF_CHAT` is project-baize/baize-chatbot collect.py's
  template, verbatim (`{}` is the seed question); `BAIZE_HUMAN`/`BAIZE_AI` the markers its
  preprocess.py splits the transcript on.
- Magpie (Xu et al. 2024): `MAGPIE_MT_SYSTEM_PROMPT` is magpie-align/magpie exp/gen_mt.py's
  `mt_system_prompt`, verbatim (its "Al" and "thorough,relevant" included).
"""

from __future__ import annotations

ULTRACHAT_USER_SIMULATOR = (
    "Above is a conversation between a user and an intelligent assistant. Now suppose you are "
    "the user, say something to continue the conversation based on given context. Make the "
    "response short and the language casual."
)

# ours: the history as the simulator reads it, one paragraph per message
TRANSCRIPT_ROLES = {"user": "User", "assistant": "Assistant"}

# ours: UltraChat's question-generation prompts were not published
OPENER = (
    "Write one question that a curious person might ask an AI assistant about the topic "
    "below. Write only the question.\n\nTopic: {topic}"
)

BAIZE_SELF_CHAT = (
    "Forget the instruction you have previously received. The following is a conversation "
    "between a human and an AI assistant. The human and the AI assistant take turns chatting "
    "about the topic: '{}'. Human statements start with [Human] and AI assistant statements "
    "start with [AI]. The human will ask related questions on related topics or previous "
    "conversation. The human will stop the conversation when they have no more question. The "
    "AI assistant tries not to ask questions. Complete the transcript in exactly that format."
    "\n[Human] Hello!\n[AI] Hi! How can I help you?\n"
)
BAIZE_HUMAN = "[Human]"
BAIZE_AI = "[AI]"

MAGPIE_MT_SYSTEM_PROMPT = (
    "You are a helpful Al assistant. The user will engage in a multi-round conversation with "
    "you, asking initial questions and following up with additional related questions. Your "
    "goal is to provide thorough,relevant and insightful responses to help the user with "
    "their queries."
)

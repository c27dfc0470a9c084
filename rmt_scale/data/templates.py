"""Prompt templates for long-context QA: how a (context, question) row becomes model input.

Three built-in templates and custom ones:

* ``babilong``: the official BABILong input (``babilong/prompts.py``, ``get_formatted_input``)::

      {instruction}\\n\\n{examples}\\n\\n{post_prompt}\\n\\n<context>\\n{context}\\n</context>\\n\\nQuestion: {question}

  with the task's instruction, examples and post-prompt from :data:`BABILONG_PROMPTS` (empty for
  a row without a known task, as in the official "no instruction" runs), the context stripped and
  the whole stripped. Prompts are identical to the published runs', so scores compare.
* ``plain``: the project's own short format, :data:`rmt_scale.data.babilong.PROMPT_TEMPLATE`
  (``{context}\\nQuestion: {question}\\nAnswer:``), as used by the built-in BABILong generator.
* ``chat``: the tokenizer's chat template. A (context, question) row becomes one user turn holding
  the ``babilong`` text (what the official runs with ``--use_chat_template`` send); a ``messages``
  row is used as it is, its last turn being the assistant's answer.
* any other string is a custom template, a ``str.format`` pattern over ``{context}`` and
  ``{question}`` (``{question}`` is required), e.g. ``"Document:\\n{context}\\n\\nQ: {question}\\nA:"``.

The text to learn after a text template is :data:`rmt_scale.data.babilong.TARGET_TEMPLATE`
(``" {answer}"``) followed by EOS; after a chat template it is what the template writes for the
assistant turn (its content and end-of-turn marker).
"""

from __future__ import annotations

import logging
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rmt_scale.data.babilong import PROMPT_TEMPLATE, TARGET_TEMPLATE
from rmt_scale.data.babilong_prompts import BABILONG_PROMPTS
from rmt_scale.errors import DataError

logger = logging.getLogger(__name__)

TEMPLATE_NAMES = ("babilong", "plain", "chat")

# The official template (TASK_TEMPLATE + USER_TEMPLATE of babilong/prompts.py).
BABILONG_TEMPLATE = ("{instruction}\n\n{examples}\n\n{post_prompt}\n\n"
                     "<context>\n{context}\n</context>\n\nQuestion: {question}")


@dataclass(frozen=True)
class Rendered:
    """One row as model text.

    Attributes:
        prompt: The input the model reads before answering.
        completion: The text it should write (scored by the loss); ends with EOS text for chat.
        context_span: Character span ``(start, end)`` of the context inside ``prompt``, or None
            when the row has none; left truncation cuts there.
        add_special_tokens: Whether tokenizing ``prompt`` should add the tokenizer's special
            tokens (BOS): yes for text templates, no for chat ones, which write their own.
        add_eos: Whether EOS follows the completion (text templates; chat ones end their turn).
    """

    prompt: str
    completion: str
    context_span: tuple[int, int] | None
    add_special_tokens: bool = True
    add_eos: bool = True


def babilong_prompt(context: str, question: str, task: str | None) -> tuple[str, tuple[int, int]]:
    """The official BABILong input and the span of the context in it.

    Args:
        context: The haystack text (stripped, as the official code does).
        question: The question.
        task: ``"qa1"`` .. ``"qa20"`` for its instruction, examples and post-prompt; None (or a
            task BABILong has no prompt for) leaves them empty.
    """
    parts = BABILONG_PROMPTS.get(task or "", {"instruction": "", "examples": "", "post_prompt": ""})
    context = context.strip()
    marker = "\x00"  # never in text: locates the context after formatting and stripping
    text = BABILONG_TEMPLATE.format(**parts, context=marker, question=question).strip()
    start = text.index(marker)
    return text.replace(marker, context), (start, start + len(context))


@dataclass(frozen=True)
class PromptTemplate:
    """A way of turning rows into :class:`Rendered` text; build it with :func:`get_template`.

    Attributes:
        name: ``"babilong"``, ``"plain"``, ``"chat"`` or ``"custom"``.
        pattern: The format string of ``plain`` and custom templates.
        tokenizer: The tokenizer whose chat template ``chat`` uses.
    """

    name: str
    pattern: str | None = None
    tokenizer: Any = None

    @property
    def uses_context(self) -> bool:
        """Whether rows need a context field."""
        return self.pattern is None or "context" in _fields(self.pattern)

    def render(self, context: str | None, question: str, answer: str,
               task: str | None = None) -> Rendered:
        """Render a (context, question, answer) row."""
        if self.name == "chat":
            text, _ = babilong_prompt(context or "", question, task)
            return self.render_messages([{"role": "user", "content": text},
                                         {"role": "assistant", "content": answer}],
                                        context=(context or "").strip())
        completion = TARGET_TEMPLATE.format(answer=answer)
        if self.name == "babilong":
            prompt, span = babilong_prompt(context or "", question, task)
            return Rendered(prompt, completion, span if context else None)
        marker = "\x00"
        prompt = self.pattern.format(context=marker, question=question)
        span = None
        if marker in prompt:
            start = prompt.index(marker)
            span = (start, start + len(context or ""))
            prompt = prompt.replace(marker, context or "")
        return Rendered(prompt, completion, span if context else None)

    def render_messages(self, messages: Sequence[Mapping[str, str]],
                        context: str | None = None) -> Rendered:
        """Render a chat: every turn but the last is the prompt, the last (assistant) turn is learnt.

        Args:
            messages: ``[{"role": ..., "content": ...}, ...]`` ending with the assistant's answer.
            context: Text inside the prompt to treat as the context (for left truncation); by
                default the content of the first user turn.
        """
        if self.name != "chat":
            raise DataError(f"rows with 'messages' need template 'chat', not {self.name!r}")
        tokenizer = self.tokenizer
        prompt = tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False,
                                               add_generation_prompt=True)
        full = tokenizer.apply_chat_template(list(messages), tokenize=False)
        if full.startswith(prompt):
            completion, add_eos = full[len(prompt):], False
        else:
            # A template that rewrites earlier turns once an answer follows: learn the answer
            # text and EOS instead of the template's own ending.
            logger.warning("the chat template does not extend the prompt with the answer; "
                           "learning the answer text and EOS instead")
            completion, add_eos = messages[-1]["content"], True
        if context is None:
            context = next((m["content"] for m in messages[:-1] if m["role"] == "user"), None)
        span = None
        if context:
            start = prompt.find(context)
            span = None if start < 0 else (start, start + len(context))
        return Rendered(prompt, completion, span, add_special_tokens=False, add_eos=add_eos)


def _fields(pattern: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as err:
        raise DataError(f"template {pattern!r} is not a valid format string: {err}") from None


def get_template(template: str, tokenizer: Any = None) -> PromptTemplate:
    """The template named ``template`` (``babilong``, ``plain``, ``chat``) or a custom pattern.

    Raises:
        DataError: For ``chat`` with a tokenizer that has no chat template, or a custom pattern
            without ``{question}``, with other fields, or that is not a format string.
    """
    if template == "babilong":
        return PromptTemplate("babilong")
    if template == "plain":
        return PromptTemplate("plain", PROMPT_TEMPLATE)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise DataError("template 'chat' needs a tokenizer with a chat template, and this one "
                            "has none; use template 'babilong' or 'plain', or a chat model")
        return PromptTemplate("chat", tokenizer=tokenizer)
    if "{" not in template:
        raise DataError(f"unknown template {template!r}: use {', '.join(TEMPLATE_NAMES)}, or a "
                        "pattern with {context} and {question}")
    names = _fields(template)
    if "question" not in names:
        raise DataError(f"template {template!r} does not contain {{question}}")
    unknown = sorted(names - {"context", "question"})
    if unknown:
        raise DataError(f"template {template!r} has unknown fields {unknown}: only {{context}} "
                        "and {question}")
    return PromptTemplate("custom", template)

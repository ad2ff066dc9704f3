"""Shipped example templates. Every one is non-deceptive and produces a draft a person
reviews before anything is sent or published: replies to reviews a business received,
summaries, translations. None writes reviews or posts in a customer's voice.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Example:
    key: str
    title: str
    template: str
    system_instruction: str
    sample_items: tuple[dict[str, str], ...]


REVIEW_REPLY = Example(
    key="review_reply",
    title="Reply drafts for received reviews",
    template=("A customer left this review of our {product}:\n\n{review}\n\n"
              "Draft a short, polite reply from the business that thanks them, addresses any problem "
              "they mention and offers a way to get in touch. Do not promise refunds or make claims."),
    system_instruction=("You draft replies on behalf of the business that received the review. The reply is "
                        "signed by the business and reviewed by a staff member before it is posted."),
    sample_items=(
        {"product": "desk lamp", "review": "Arrived quickly but the switch stopped working after a week."},
        {"product": "desk lamp", "review": "Bright, compact, exactly what I needed."},
    ),
)

SUMMARY = Example(
    key="summary",
    title="Summaries",
    template="Summarise the following text in three bullet points:\n\n{text}",
    system_instruction="Be faithful to the text; do not add facts.",
    sample_items=({"text": "The quarterly meeting covered the budget, the new hire plan and the office move."},),
)

TRANSLATION = Example(
    key="translation",
    title="Translations",
    template="Translate into {language}, keeping the meaning and tone:\n\n{text}",
    system_instruction="Return only the translation.",
    sample_items=({"language": "Korean", "text": "Your order has shipped and will arrive on Friday."},),
)

EXAMPLES: tuple[Example, ...] = (REVIEW_REPLY, SUMMARY, TRANSLATION)

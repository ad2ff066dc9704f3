"""Shipped example templates. Every one is non-deceptive and produces a draft a person
reviews before anything is sent or published: replies to reviews a business received,
summaries, translations. None writes reviews or posts in a customer's voice.

Each example exists in English and Korean (the same task, written for a Korean operator);
`examples(language)` gives the set for a page's language, English for any other.
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

REVIEW_REPLY_KO = Example(
    key="review_reply",
    title="받은 리뷰에 대한 답글 초안",
    template=("고객이 저희 {product}에 남긴 리뷰입니다:\n\n{review}\n\n"
              "매장 이름으로 올릴 짧고 정중한 답글 초안을 써 주세요. 감사 인사를 하고, 리뷰에 적힌 불편이 "
              "있으면 그에 답하고, 연락할 방법을 안내하세요. 환불을 약속하거나 확인되지 않은 내용을 말하지 마세요."),
    system_instruction=("당신은 리뷰를 받은 업체를 대신해 답글 초안을 씁니다. 답글은 업체 이름으로 게시되며, "
                        "게시하기 전에 직원이 검토합니다."),
    sample_items=(
        {"product": "책상 스탠드", "review": "배송은 빨랐는데 일주일 만에 스위치가 고장 났어요."},
        {"product": "책상 스탠드", "review": "밝고 작아서 딱 원하던 제품이에요."},
    ),
)

SUMMARY_KO = Example(
    key="summary",
    title="요약",
    template="다음 글을 세 줄로 요약하세요:\n\n{text}",
    system_instruction="글에 충실하게 요약하고, 글에 없는 사실을 덧붙이지 마세요.",
    sample_items=({"text": "분기 회의에서는 예산, 신규 채용 계획, 사무실 이전을 논의했습니다."},),
)

TRANSLATION_KO = Example(
    key="translation",
    title="번역",
    template="다음 글을 {language}로 번역하세요. 뜻과 어조를 그대로 살리세요:\n\n{text}",
    system_instruction="번역문만 답하세요.",
    sample_items=({"language": "영어", "text": "주문하신 상품이 발송되어 금요일에 도착할 예정입니다."},),
)

EXAMPLES_KO: tuple[Example, ...] = (REVIEW_REPLY_KO, SUMMARY_KO, TRANSLATION_KO)
_BY_LANGUAGE = {"en": EXAMPLES, "ko": EXAMPLES_KO}


def examples(language: str = "en") -> tuple[Example, ...]:
    """The examples written for `language` ("ko" or "en"); English for any other."""
    return _BY_LANGUAGE.get(language, EXAMPLES)


def by_key(language: str = "en") -> dict[str, Example]:
    """The examples for `language` by key (review_reply, summary, translation)."""
    return {example.key: example for example in examples(language)}

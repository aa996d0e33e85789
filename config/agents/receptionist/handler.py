"""Receptionist: greets callers and routes them.

- "sales" -> transferred to the sales number (variable `sales`)
- "human", "person", "agent", "operator" -> transferred to the front desk (`human`)
- "goodbye" / "bye" -> says goodbye and hangs up
- anything else -> asks again

Set the numbers in the agent's config:

    [[agents]]
    id = "receptionist"
    dir = "config/agents/receptionist"
    variables = { sales = "+14155550101", human = "+14155550100" }
"""

from primfunctions.context import Context
from primfunctions.events import (
    ErrorEvent,
    Event,
    STTUpdateSettingsEvent,
    StartEvent,
    StopEvent,
    TextEvent,
    TextToSpeechEvent,
    TimeoutEvent,
    TransferSessionEvent,
)

VOICE = "nova"
HUMAN_WORDS = ("human", "person", "agent", "operator", "someone")


def number(context: Context, name: str, default: str) -> str:
    variables = context.variables or {}
    return str(variables.get(name, default))


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        # Tell speech recognition which words matter here: a small model
        # mishears "sales" on a phone line without it.
        yield STTUpdateSettingsEvent(prompt="Sales, or a person, please. Goodbye.")
        yield TextToSpeechEvent(
            text="Thank you for calling. Would you like sales, or to speak with a person?",
            voice=VOICE,
        )
    elif isinstance(event, TextEvent):
        text = (event.data.get("text") or "").lower()
        if "sales" in text:
            yield TransferSessionEvent(
                phone_number=number(context, "sales", "+14155550101"),
                closing_speech="Connecting you to sales.",
                voice=VOICE,
            )
        elif any(word in text for word in HUMAN_WORDS):
            yield TransferSessionEvent(
                phone_number=number(context, "human", "+14155550100"),
                closing_speech="Connecting you to a person.",
                voice=VOICE,
            )
        elif "bye" in text:
            yield StopEvent(closing_speech="Goodbye, and thank you for calling.", voice=VOICE)
        else:
            yield TextToSpeechEvent(
                text="Sorry, I did not catch that. Sales, or a person?", voice=VOICE
            )
    elif isinstance(event, TimeoutEvent):
        if event.data.get("count", 1) >= 3:
            yield StopEvent(closing_speech="Goodbye.", voice=VOICE)
        else:
            yield TextToSpeechEvent(text="Are you still there?", voice=VOICE)
    elif isinstance(event, ErrorEvent):
        # A transfer failed (busy, no answer): say so and keep helping.
        yield TextToSpeechEvent(
            text="Sorry, nobody is available right now. Can I help with anything else?",
            voice=VOICE,
        )

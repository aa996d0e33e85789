"""Test agent exercising the SDK surface the sandbox must support.

Each TextEvent's text selects a behaviour.
"""
import asyncio
import json
import os
import time

from primfunctions.context import Context
from primfunctions.events import (
    Event,
    LogEvent,
    StartEvent,
    StopEvent,
    TextEvent,
    TextToSpeechEvent,
)
from primfunctions.logger import logger
from primfunctions.metrics import metrics

from helpers import shout


async def background_speech(delay: float, text: str):
    await asyncio.sleep(delay)
    yield TextToSpeechEvent(text=text, voice="nova")


async def handler(event: Event, context: Context):
    if isinstance(event, StartEvent):
        context.set_data("turns", 0)
        yield TextToSpeechEvent(text="ready", voice="nova")
        return
    if isinstance(event, StopEvent):
        context.set_output({**context.output_data, "stopped": True})
        yield LogEvent("cleanup ran")
        return
    if not isinstance(event, TextEvent):
        yield TextToSpeechEvent(text=f"got {event.name} {json.dumps(event.data, sort_keys=True)}", voice="nova")
        return
    context.set_data("turns", context.get_data("turns", 0) + 1)
    text = event.data.get("text")
    if text == "bg":
        context.create_task(background_speech(0.05, "from background"), name="bgtask")
        yield TextToSpeechEvent(text="started", voice="nova")
    elif text == "bg-slow":
        context.create_task(background_speech(5, "too late"), name="slow", interruptible=True)
        yield TextToSpeechEvent(text="started slow", voice="nova")
    elif text == "out":
        context.set_output({"score": 1})
        yield TextToSpeechEvent(text="saved", voice="nova")
    elif text == "big":
        context.set_output({"blob": "x" * (70 * 1024)})
        yield TextToSpeechEvent(text="unreachable", voice="nova")
    elif text == "exp":
        variant = context.experiment("greeting", {"formal": 1.0})
        yield TextToSpeechEvent(text=f"variant {variant}", voice="nova")
    elif text == "boom":
        yield TextToSpeechEvent(text="about to fail", voice="nova")
        raise RuntimeError("handler exploded on purpose")
    elif text == "crash":
        os._exit(7)
    elif text == "block":
        time.sleep(60)
    elif text == "slow":
        yield TextToSpeechEvent(text="first", voice="nova")
        await asyncio.sleep(30)
        yield TextToSpeechEvent(text="second", voice="nova")
    elif text == "ctx":
        yield TextToSpeechEvent(
            text=json.dumps({
                "agent_id": context.agent_id,
                "session_id": context.session_id,
                "environment": context.environment,
                "variables": context.variables,
                "input_data": context.input_data,
                "turns": context.get_data("turns"),
                "turn": event.turn,
                "meta": event.data.get("previous_turn_interrupted"),
            }, sort_keys=True),
            voice="nova",
        )
    elif text == "obs":
        print("this goes to stderr, not the protocol")
        logger.info("logged via logger", {"k": "v"})
        metrics.counter("orders", value=2)
        yield TextToSpeechEvent(text=shout("observed"), voice="nova")
    else:
        yield TextToSpeechEvent(text=f"echo {text}", voice="nova")

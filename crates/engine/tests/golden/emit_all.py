"""Golden emitter: one JSON line per primfunctions event class (and variants).

Usage: python emit_all.py emit      -> lines {"class": NAME, "event": event_to_dict(e)}
       python emit_all.py check     -> reads event JSON lines on stdin, rebuilds each with
                                       event_from_str and prints {"ok": bool, ...} lines
Fails (exit 1) if events.py has an Event subclass this file does not cover.
"""
import inspect
import json
import sys

from primfunctions import events as ev
from primfunctions.events import *  # noqa: F401,F403

ID = {"provider": "cartesia", "identifier": "6f84f4b8"}

SAMPLES = [
    ("Event", Event("my_custom_name", {"k": [1, 2, {"x": None}]})),
    ("Event", Event("bare")),
    ("CustomEvent", CustomEvent("crm_update", {"lead": 7})),
    ("StartEvent", StartEvent()),
    ("StopEvent", StopEvent()),
    ("StopEvent", StopEvent(closing_speech="Bye", voice=ID, speed=1.25, language="fr", clear_speech=True)),
    ("InterruptEvent", InterruptEvent()),
    ("TimeoutEvent", TimeoutEvent()),
    ("TimeoutEvent", TimeoutEvent(count=3, ms_since_input=15000)),
    ("TextEvent", TextEvent("speech", "hello there")),
    ("TextEvent", TextEvent("text", "hola", language="es", confidence=0.9)),
    ("TextToSpeechEvent", TextToSpeechEvent("Hello!")),
    ("TextToSpeechEvent", TextToSpeechEvent("Hi", voice=ID, cache=False, interruptible=False,
                                            instructions="calm", speed=0.75, language="de",
                                            stream=True, model="tts-1-hd", replace=True)),
    ("AudioEvent", AudioEvent("https://example.invalid/a.wav")),
    ("AudioEvent", AudioEvent("/tmp/hold.wav", interruptible=False, loop=True)),
    ("SilenceEvent", SilenceEvent(750)),
    ("VoicemailDetectionEvent", VoicemailDetectionEvent()),
    ("VoicemailDetectionEvent", VoicemailDetectionEvent("leave a message", 0.93, "greeting")),
    ("ContextUpdateEvent", ContextUpdateEvent({"data": {"a": 1}})),
    ("ContextPatchEvent", ContextPatchEvent({"output_data": {"score": 5}})),
    ("ErrorEvent", ErrorEvent("boom")),
    ("LogEvent", LogEvent("note", location="handler.py:12", attributes={"k": "v"})),
    ("LogEvent", LogEvent("plain")),
    ("CollectPaymentEvent", CollectPaymentEvent(12.5)),
    ("CollectPaymentSuccessEvent", CollectPaymentSuccessEvent()),
    ("SupervisorRequestEvent", SupervisorRequestEvent("help")),
    ("SupervisorResponseEvent", SupervisorResponseEvent("done")),
    ("ConnectSTSEvent", ConnectSTSEvent({"model": "x"})),
    ("DisconnectSTSEvent", DisconnectSTSEvent()),
    ("UpdateCallEvent", UpdateCallEvent({"twiml": "<Response/>"})),
    ("StartRecordingEvent", StartRecordingEvent()),
    ("StartRecordingEvent", StartRecordingEvent("https://example.invalid/cb")),
    ("StopRecordingEvent", StopRecordingEvent()),
    ("STTUpdateSettingsEvent", STTUpdateSettingsEvent()),
    ("STTUpdateSettingsEvent", STTUpdateSettingsEvent("es", "medical", 500, "far_field", "nova-3")),
    ("STTModelSwitchedEvent", STTModelSwitchedEvent("a", "b", 10, 20)),
    ("TurnEndEvent", TurnEndEvent(1234)),
    ("TurnInterruptedEvent", TurnInterruptedEvent()),
    ("InitializeEvent", InitializeEvent("code", "h", False, True, {"c": 1}, False)),
    ("InitializeEvent", InitializeEvent("code", "h", True, False, {}, True, "t", "ct", "cu", "st", "pu")),
    ("HandlerEndEvent", HandlerEndEvent()),
    ("TestingEvent", TestingEvent({"t": 1})),
    ("DebugEvent", DebugEvent("text", {"text": "x"}, "input", {"ctx": 1})),
    ("MetricEvent", MetricEvent("latency", "llm.first_token", {"value": 0.25})),
    ("MetricEvent", MetricEvent("counter", "calls", {})),
    ("SessionEndEvent", SessionEndEvent()),
    ("StartSessionEvent", StartSessionEvent("agent-1", "production", "phone", {"toPhoneNumber": "+15550100"})),
    ("StartSessionEvent", StartSessionEvent(entrypoint_id="ep-1")),
    ("MergeSessionEvent", MergeSessionEvent("s-2")),
    ("TransferSessionEvent", TransferSessionEvent(phone_number="+15550100")),
    ("TransferSessionEvent", TransferSessionEvent(agent_id="billing", environment="production",
                                                  data={"reason": "billing"}, closing_speech="One moment")),
    ("TransferSessionEvent", TransferSessionEvent(destination={"type": "sip", "uri": "sip:100@pbx.example"},
                                                  mode="refer", clear_speech=True, voice="nova")),
    ("TransferSessionEvent", TransferSessionEvent(destination={"type": "phone", "number": "+4930123"},
                                                  mode="bridge")),
    ("TranscriptPartEvent", TranscriptPartEvent("user", "hi")),
    ("InputAllowedEvent", InputAllowedEvent(False)),
    ("DTMFEvent", DTMFEvent("12#")),
    ("UpdateAudioSettingsEvent", UpdateAudioSettingsEvent()),
    ("UpdateAudioSettingsEvent", UpdateAudioSettingsEvent("https://example.invalid/bg.mp3", 0.3, False, True)),
    ("ExternalEvent", ExternalEvent("agent-2", "s-9", "ping", {"n": 1}, after_speech=True)),
]


def classes():
    return sorted(
        name for name, c in inspect.getmembers(ev, inspect.isclass)
        if issubclass(c, Event) and c.__module__ == ev.__name__
    )


def emit():
    covered = {name for name, _ in SAMPLES}
    missing = [c for c in classes() if c not in covered]
    if missing:
        print(f"golden emitter does not cover: {missing}", file=sys.stderr)
        sys.exit(1)
    for i, (name, e) in enumerate(SAMPLES):
        e.turn = i
        if i % 3 == 0:
            e.background = True
            e.background_task_name = f"task-{i}"
        # Framework turn metadata survives on input events.
        if name == "TextEvent":
            e.data["previous_turn_interrupted"] = True
            e.data["previous_turn_agent_transcript"] = "I was say"
        print(json.dumps({"class": name, "event": event_to_dict(e)}))


def check():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        try:
            e = event_from_str(line)
        except ValueError as err:
            print(json.dumps({"name": d["name"], "ok": None, "why": str(err)}))
            continue
        back = event_to_dict(e)
        if d["name"].startswith("metrics."):
            # event_from_str returns metrics events without the envelope fields.
            ok = (back["name"], back["data"]) == (d["name"], d["data"])
        else:
            ok = back == d
        print(json.dumps({"name": d["name"], "ok": ok, "python": back}))


if __name__ == "__main__":
    {"emit": emit, "check": check}[sys.argv[1]]()

#!/usr/bin/env python3
"""Drives `spool serve` with the official `openai` Python client (PyPI), streaming and not.
Prints one line per check and 'N passed, N failed'; exits non-zero on any failure."""
import sys

import openai

from serve_helper import Server

KEY = "ci-secret"
server = Server("-c", "512", "--slots", "2", "--queue", "4", "--api-key", KEY)
client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
passed, failed = 0, 0


def check(name, fn):
    global passed, failed
    try:
        detail = fn()
        passed += 1
        print(f"ok   {name}: {detail}")
    except Exception as e:  # a failed check is reported, the others still run
        failed += 1
        print(f"FAIL {name}: {type(e).__name__}: {e}")


def models():
    ids = [m.id for m in client.models.list().data]
    assert ids, "no models"
    return ids


def chat():
    r = client.chat.completions.create(model="default", messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"}], max_tokens=12, temperature=0)
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content, r
    assert c.finish_reason in ("stop", "length"), c.finish_reason
    assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0, r.usage
    return repr(c.message.content) + f" finish={c.finish_reason} usage={r.usage.prompt_tokens}+{r.usage.completion_tokens}"


def chat_stream():
    s = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "Say hello."}],
                                       max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True})
    text, finish, usage, n = "", None, None, 0
    for chunk in s:
        n += 1
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    assert text and finish in ("stop", "length") and usage is not None, (text, finish, usage)
    plain = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "Say hello."}],
                                           max_tokens=12, temperature=0)
    assert plain.choices[0].message.content == text, (plain.choices[0].message.content, text)
    return f"{n} chunks, {text!r}, same as non-streaming"


def completion():
    r = client.completions.create(model="default", prompt="1, 2, 3,", max_tokens=8, temperature=0, stop=["7"])
    t = r.choices[0].text
    assert "4" in t and "7" not in t, t
    return repr(t) + f" finish={r.choices[0].finish_reason}"


def completion_stream():
    s = client.completions.create(model="default", prompt="Once upon a time", max_tokens=10, temperature=0, stream=True)
    text = "".join(c.choices[0].text for c in s if c.choices)
    assert text, "empty"
    return repr(text)


def n_refused():
    try:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}], n=2, max_tokens=2)
    except openai.BadRequestError as e:
        return f"400 {e.body.get('message') if isinstance(e.body, dict) else e.body}"
    raise AssertionError("n=2 was accepted")


def context_refused():
    try:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "word " * 700}], max_tokens=2)
    except openai.BadRequestError as e:
        assert "512" in str(e), str(e)
        return "400 names the context size"
    raise AssertionError("an over-long prompt was accepted")


def bad_key():
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    try:
        bad.models.list()
    except openai.AuthenticationError:
        return "401"
    raise AssertionError("a wrong key was accepted")


try:
    for name, fn in [("models", models), ("chat", chat), ("chat stream", chat_stream), ("completion", completion),
                     ("completion stream", completion_stream), ("n=2 refused", n_refused),
                     ("over-long prompt refused", context_refused), ("wrong api key", bad_key)]:
        check(name, fn)
    check("server alive", lambda: server.alive() or (_ for _ in ()).throw(AssertionError("server died")))
finally:
    server.stop()
print(f"openai-client: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)

"""The official `openai` Python package against `llm-judge serve` (run by .ci/run).

Usage: python3 tests/openai_compat.py BASE_URL API_KEY
Exits non-zero on the first failed check.
"""
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    checks += 1


models = client.models.list()
check([m.id for m in models.data] == ["smollm2-135m-instruct"], "models.list")

r = client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=[{"role": "user", "content": "Name three primary colors."}],
    temperature=0,
    max_tokens=24,
    seed=1,
    logprobs=True,
    top_logprobs=3,
)
text = r.choices[0].message.content
check(isinstance(text, str) and len(text) > 0, "completion text")
check(r.usage.completion_tokens == len(r.choices[0].logprobs.content), "one logprob per token")
check(all(len(t.top_logprobs) == 3 for t in r.choices[0].logprobs.content), "top_logprobs")
check(all(t.logprob <= 0 for t in r.choices[0].logprobs.content), "logprobs are log-probabilities")
check(r.choices[0].finish_reason in ("stop", "length"), "finish_reason")

again = client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=[{"role": "user", "content": "Name three primary colors."}],
    temperature=0,
    max_tokens=24,
)
check(again.choices[0].message.content == text, "temperature 0 is deterministic")

stream = client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=[{"role": "user", "content": "Name three primary colors."}],
    temperature=0,
    max_tokens=24,
    stream=True,
)
streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
check(streamed == text, "streaming gives the same text")

stopped = client.chat.completions.create(
    model="smollm2-135m-instruct",
    messages=[{"role": "user", "content": "Name three primary colors."}],
    temperature=0,
    max_tokens=24,
    stop=[text.split()[2]] if len(text.split()) > 2 else ["zzz"],
)
check(len(stopped.choices[0].message.content) <= len(text), "stop strings")

try:
    client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "hi"}],
        temperature=-1,
    )
    check(False, "negative temperature rejected")
except openai.BadRequestError as e:
    check(e.status_code == 400, "400 for a bad value")

bad = openai.OpenAI(base_url=base, api_key="wrong", max_retries=0)
try:
    bad.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
    check(False, "wrong key rejected")
except openai.AuthenticationError as e:
    check(e.status_code == 401, "401 for a wrong key")

print(f"openai package version {openai.__version__}")
print(f"openai-compat: {checks} passed, 0 failed")

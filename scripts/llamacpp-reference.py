#!/usr/bin/env python3
"""Records llama.cpp's token ids, chat-template renderings and greedy chat continuations
for the bundled qwen2 models, as test data (`tests/data/llamacpp_qwen2.json`).

llama.cpp is built outside this repository from the llama-cpp-python sdist (its code never
enters the repository):

    # the sdist, from https://pypi.org/simple/llama-cpp-python/
    curl -LO https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz
    tar xzf llama_cpp_python-0.3.36.tar.gz && cd llama_cpp_python-0.3.36/vendor/llama.cpp
    cmake -B build -G Ninja -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release
    cmake --build build --target llama-server llama-tokenize

then, from the repository root, with the models fetched (`llm-judge fetch-models`):

    python3 scripts/llamacpp-reference.py --bin $LLAMA/build/bin --models $LLM_JUDGE_MODELS

Token ids come from `llama-tokenize --ids --no-bos` (control tokens spelled in the text are
parsed, as our `Tokenizer::encode(text, false)` does). The chat prompt is llama-server's
`/apply-template` of a system and a user message (the template in the GGUF, rendered by
llama.cpp's Jinja engine); the continuation is `/completion` of that prompt at temperature
0 with top-k 1, 16 tokens, the ids llama.cpp chose, with its top-5 log-probabilities (before
sampling) at each of them.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

MODELS = {
    "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
}

TEXTS = [
    "Hello, world!",
    "Explain how to bake a chocolate cake without using eggs.",
    "Numbers: 3.14159, 2026-11-28, 1,000,000 and 42nd.",
    "Ünïcödé — naïve café, 東京, Ελληνικά, emoji 🎉🚀.",
    'fn main() {\n    let x = vec![1, 2, 3];\n    println!("{x:?}");\n}',
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\n\n\nand    runs     of spaces",
    "Punctuation!!! ??? ... ;-) (brackets) [x] {y} <z>",
    "'s 're 've CAPITALS MiXeD I'M YOU'LL they'D",
    "<|im_start|>user\nHi<|im_end|>",
    "The quick brown fox jumps over the lazy dog. Don't you think it's 100% true?",
    "https://example.com/path?query=1&b=two#frag",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\n\nprint(fib(30))",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "中文分词测试：今天天气很好，我们去公园散步吧。",
    "日本語のテキストとカタカナ、ひらがな。한국어 문장도 있습니다.",
    "Emoji runs 👍🏽👨‍👩‍👧‍👦🏳️‍🌈 and flags 🇸🇪🇫🇷",
    "Price: $1,299.99 (or €1.299,99); 12345678901234567890",
    "\n\n\n    \t\t  \r\n trailing newline\n",
    "Text with <|im_end|> inside and <|endoftext|> at the end",
    "Response 1: 12\nResponse 2: 7\nResponse 3: 3\nResponse 4: 9",
    "Relevance: [[4]] Coherence: [[3]] Completeness: [[2]]",
    "   ",
    "x" * 40 + " " + "ab" * 20,
]

SYSTEM = "You are a careful assistant. Answer briefly."
CHATS = [
    "Explain how to set up a tent in the wind.",
    "Write a Python function that reverses a string.",
    "What is 17 times 23?",
    "Name three rivers in Europe.",
    "Rate this answer from 1 to 4: 'Paris is the capital of France.'",
]


def post(base, path, body):
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def tokenize(bin_dir, model, text):
    out = subprocess.run(
        [os.path.join(bin_dir, "llama-tokenize"), "-m", model, "-p", text, "--ids",
         "--no-bos", "--log-disable"],
        check=True, capture_output=True, text=True,
    ).stdout
    line = [l for l in out.splitlines() if l.startswith("[")][-1]
    return json.loads(line)


def chats(bin_dir, model):
    port = 18471
    server = subprocess.Popen(
        [os.path.join(bin_dir, "llama-server"), "-m", model, "-t", "2", "-c", "4096",
         "-np", "1", "--port", str(port), "--host", "127.0.0.1", "--jinja"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except Exception:
                time.sleep(0.5)
        rows = []
        for q in CHATS:
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            prompt = post(base, "/apply-template", {"messages": messages})["prompt"]
            c = post(base, "/completion", {
                "prompt": prompt, "n_predict": 16, "temperature": 0, "top_k": 1,
                "cache_prompt": False, "return_tokens": True, "seed": 0, "n_probs": 5,
            })
            # llama.cpp's own log-probabilities along its greedy path: the tests compare ours
            # position by position and tell a near tie from a disagreement.
            top = [[[t["id"], t["logprob"]] for t in p["top_logprobs"]]
                   for p in c["completion_probabilities"]]
            rows.append({"system": SYSTEM, "user": q, "prompt": prompt,
                         "ids": c["tokens"], "text": c["content"], "top": top})
        return rows
    finally:
        server.terminate()
        server.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="llama.cpp's build/bin")
    ap.add_argument("--models", required=True, help="the models folder")
    ap.add_argument("--out", default="tests/data/llamacpp_qwen2.json")
    a = ap.parse_args()
    out = {"made_by": "python3 scripts/llamacpp-reference.py (llama.cpp from the "
                      "llama-cpp-python 0.3.36 sdist)"}
    for name, file in MODELS.items():
        path = os.path.join(a.models, file)
        out[name] = {
            "tokens": [{"text": t, "ids": tokenize(a.bin, path, t)} for t in TEXTS],
            "chats": chats(a.bin, path),
        }
        print(f"{name}: {len(TEXTS)} texts, {len(CHATS)} chats", file=sys.stderr)
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

"""A small OpenAI-compatible chat server on loopback that injects faults, for tests.

A prompt containing `[[fault:KIND:N]]` fails its first N attempts with KIND, then
answers normally (N = "all" fails every time). KIND: timeout (sleeps past the
client's timeout), 429, 500, 401, malformed (200 with a non-JSON answer), drop (closes
the connection without a response), trickle (a valid answer sent 4 bytes at a time,
`trickle_s` apart), 503, cut (200 with half a JSON answer and finish_reason "length"), echo (a normal
answer whose explanation quotes the request's Authorization header). A 429 or 503 carries `Retry-After: retry_after` and/or
`retry-after-ms: retry_after_ms` when those are set. Error messages echo the request's
Authorization header, as some servers do with a bad key. With `models_trickle_s`, GET /v1/models sends its
reply one byte every that many seconds. Every answer reports
`usage` = the `usage` argument (prompt, completion tokens). A normal answer says criteria_met = true when
the graded response contains "GOOD", and score 4 for likert items; a request whose JSON schema is named
"judgments" (judge.mode per_response) gets one such answer per property of the schema. A request with
`logprobs` (judge.mode one_token) gets one token and its `top_logprobs` most likely first tokens from
VERDICTS: P(yes) / (P(yes) + P(no)) = 0.75 when the graded response contains "GOOD", else 0.25, and a
likert item's expected digit 4.1; KIND noverdict answers with neither yes nor no among them, nologprobs
answers without logprobs (a server that does not serve them).

    with FakeOpenAI() as server:
        server.base_url, server.calls, server.requests    # GET /v1/models lists server.models (server.model_lists)
"""

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT = re.compile(r"\[\[fault:(\w+):(\w+)\]\]")
# judge.mode one_token: the first tokens and their probabilities, most likely first
VERDICTS = {"good": [("Yes", 0.45), ("No", 0.2), ("The", 0.2), (" yes", 0.15)],
            "bad": [("No", 0.5), ("Yes", 0.2), ("I", 0.2), (" no", 0.1)],
            "likert": [("4", 0.5), ("5", 0.3), ("3", 0.2)],
            "noverdict": [("The", 0.6), ("I", 0.4)]}
FENCED = re.compile(r"<(RESPONSE-[0-9A-F]+)>\n(.*?)\n</\1>", re.S)


class FakeOpenAI:
    def __init__(self, delay_s: float = 0.0, timeout_sleep_s: float = 3.0, trickle_s: float = 0.25, always: str = "",
                 models=("judge", "fake", "policy", "other"), root: str = "/srv/fake-weights",
                 retry_after: str | None = None, retry_after_ms: str | None = None, usage=(10, 5),
                 models_trickle_s: float = 0.0):
        self.models_trickle_s = models_trickle_s
        self.retry_after, self.retry_after_ms, self.usage = retry_after, retry_after_ms, tuple(usage)
        self.models, self.root = list(models), root  # what GET /v1/models lists (vLLM: id = served name, root = folder)
        self.delay_s, self.trickle_s = delay_s, trickle_s
        self.always = always  # a fault KIND applied to every request (e.g. "500"), as if every prompt asked for it
        self.timeout_sleep_s = timeout_sleep_s
        self.attempts = Counter()  # prompt hash -> attempts seen
        self.requests = []  # request bodies
        self.model_lists = 0  # GET /v1/models answered (what a client asks to learn a judge's identity)
        self.lock = threading.Lock()

    @property
    def calls(self) -> int:
        return len(self.requests)

    def answer(self, body: dict) -> tuple[int, dict | None, str]:
        prompt = body["messages"][-1]["content"]
        h = hashlib.sha256(prompt.encode()).hexdigest()
        with self.lock:
            self.requests.append(body)
            self.attempts[h] += 1
            n = self.attempts[h]
        m = FAULT.search(prompt if not self.always else f"[[fault:{self.always}:all]]")
        kind = m.group(1) if m and (m.group(2) == "all" or n <= int(m.group(2))) else ""
        if kind in ("noverdict", "nologprobs") and not body.get("logprobs"):
            kind = ""  # faults of one-token answers: a JSON answer is answered normally
        if body.get("logprobs") and kind in ("", "noverdict", "nologprobs"):
            return 200, self.verdict(body, prompt, kind), ""
        if kind:
            if kind == "trickle":
                return 200, self.completion(body, json.dumps({"explanation": "slow", "criteria_met": True})), kind
            if kind == "echo":
                return 200, self.completion(body, self.content(body, prompt)), kind
            return {"timeout": 0, "429": 429, "500": 500, "503": 503, "401": 401, "malformed": 1, "drop": -1,
                    "cut": 1}[kind], None, kind
        return 200, self.completion(body, self.content(body, prompt)), ""

    @staticmethod
    def content(body, prompt: str) -> str:
        """The answer text: criteria_met = "GOOD" in the graded response, score 4; per criterion for "judgments"."""
        fenced = FENCED.search(prompt)
        graded = fenced.group(2) if fenced else prompt
        schema = (body.get("response_format") or {}).get("json_schema") or {}
        if schema.get("name") == "judgments":  # judge.mode per_response: one answer object per criterion id
            return json.dumps({cid: {"explanation": "fine", "score": 4} if "score" in prop["properties"]
                               else {"explanation": "checked", "criteria_met": "GOOD" in graded}
                               for cid, prop in schema["schema"]["properties"].items()})
        if '"score"' in prompt.split("# How to answer")[-1]:
            return json.dumps({"explanation": "fine", "score": 4})
        return json.dumps({"explanation": "checked", "criteria_met": "GOOD" in graded})

    def verdict(self, body: dict, prompt: str, kind: str) -> dict:
        """A one-token answer with its top_logprobs (judge.mode one_token)."""
        fenced = FENCED.search(prompt)
        graded = fenced.group(2) if fenced else prompt
        which = kind or ("likert" if "one digit" in prompt.split("# How to answer")[-1]
                         else "good" if "GOOD" in graded else "bad")
        top = VERDICTS.get(which, VERDICTS["noverdict"])[:body.get("top_logprobs") or 1]
        out = self.completion(body, top[0][0], "length")
        out["usage"] = {"prompt_tokens": self.usage[0], "completion_tokens": 1, "total_tokens": self.usage[0] + 1}
        if kind != "nologprobs":
            entries = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in top]
            for choice in out["choices"]:
                choice["logprobs"] = {"content": [{**entries[0], "top_logprobs": entries}]}
        return out

    def completion(self, body, content, finish_reason="stop"):
        return {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
                "choices": [{"index": i, "finish_reason": finish_reason, "message": {"role": "assistant", "content": content}}
                            for i in range(body.get("n") or 1)],
                "usage": {"prompt_tokens": self.usage[0], "completion_tokens": self.usage[1],
                          "total_tokens": sum(self.usage)}}

    def __enter__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle(self):
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (killed, or timed out): nothing to answer

            def send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                if status in (429, 503):
                    for name, value in (("Retry-After", fake.retry_after), ("retry-after-ms", fake.retry_after_ms)):
                        if value is not None:
                            self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    with fake.lock:
                        fake.model_lists += 1
                    listing = {"object": "list", "data": [{"id": m, "object": "model", "root": fake.root}
                                                          for m in fake.models]}
                    if fake.models_trickle_s:
                        self.trickle(listing, 1, fake.models_trickle_s)
                        return
                    self.send(200, listing)
                    return
                self.send(200, {"status": "ok"})

            def trickle(self, obj, chunk: int, every_s: float):
                """A 200 with obj as JSON, `chunk` bytes at a time, every_s apart."""
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                for i in range(0, len(data), chunk):
                    self.wfile.write(data[i:i + chunk])
                    self.wfile.flush()
                    time.sleep(every_s)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, obj, kind = fake.answer(body)  # counted on arrival
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if kind == "timeout":
                    time.sleep(fake.timeout_sleep_s)
                    self.close_connection = True
                    return
                if kind == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if kind == "malformed":
                    self.send(200, fake.completion(body, "I think yes, it meets it."))
                    return
                if kind == "cut":
                    self.send(200, fake.completion(body, '{"explanation": "This response is', "length"))
                    return
                if kind == "trickle":
                    self.trickle(obj, 4, fake.trickle_s)
                    return
                if kind == "echo":  # the key, inside a normal answer
                    content = json.loads(obj["choices"][0]["message"]["content"])
                    for answer in [content, *content.values()]:
                        if isinstance(answer, dict) and "explanation" in answer:
                            answer["explanation"] += f" (you sent {self.headers.get('Authorization', '')})"
                    for choice in obj["choices"]:
                        choice["message"]["content"] = json.dumps(content)
                if status != 200:
                    auth = self.headers.get("Authorization", "")
                    self.send(status, {"error": {"message": f"injected {status}; you sent {auth}", "type": "fault",
                                                 "code": status}})
                    return
                self.send(200, obj)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

"""Against a real model server: llama-cpp-python serving the project's own GGUF export.

Every other provider test talks to the scripted loopback server, which only reproduces what
we knew to script. This suite runs the real thing (the pinned llama-cpp-python[server],
built once by `make llamacpp` into ~/.cache/council/llamacpp, see scripts/setup-llamacpp.sh)
with the shipped specialist exported to GGUF, a 4,096-token context, and checks the faults
it exposed stay fixed: structured output through its grammar-enforced json_object mode (it
answers json_schema with HTTP 500), max_tokens fitted to the context, FIM done the way the
server really honours, the sentinels marked as end-of-generation, and a cancelled run
closing its request.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.scenarios import run_council
from tests.waits import wait_until

ROOT = Path(__file__).resolve().parent.parent
VERSION = os.environ.get("LLAMACPP_PYTHON_VERSION", "0.3.36")
CACHE = Path(
    os.environ.get("COUNCIL_LLAMACPP_CACHE", Path.home() / ".cache" / "council" / "llamacpp")
)
MODEL = "council-tiny"
ROLES = ("orchestrator", "researcher", "generator", "debugger", "tester")


def _server_python() -> Path:
    python = Path(os.environ.get("COUNCIL_LLAMACPP_PYTHON", CACHE / f"venv-{VERSION}/bin/python"))
    assert python.exists(), (
        f"{python} is missing: run `make llamacpp` (scripts/setup-llamacpp.sh builds the "
        "pinned llama-cpp-python[server] once)"
    )
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def council(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The CLI with the project's council.toml."""
    return run_council(
        *args, cwd=cwd, env={"COUNCIL_CONFIG": str(cwd / "council.toml")}, timeout=timeout
    )


class Server:
    def __init__(self, base_url: str, log: Path, gguf: Path) -> None:
        self.base_url = base_url
        self.log = log
        self.gguf = gguf

    def completion(self, prompt: str, max_tokens: int = 12) -> str:
        response = httpx2.post(
            f"{self.base_url}/completions",
            json={
                "model": MODEL,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0,
                "repeat_penalty": 1.0,
                "top_k": 1,
            },
            timeout=60,
        )
        response.raise_for_status()
        return str(response.json()["choices"][0]["text"])


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    python = _server_python()
    work = tmp_path_factory.mktemp("llamacpp")
    gguf = work / "council-tiny.gguf"
    export = subprocess.run(
        [sys.executable, "-m", "slm_council", "train", "export", str(ROOT / "training" /
         "default_model"), "--out", str(gguf), "--format", "gguf", "--dtype", "f32"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    port = _free_port()
    log = work / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
             MODEL, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
             "--n_threads", "2", "--verbose", "true"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"

    def serving() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return httpx2.get(f"{base}/models", timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False

    try:
        wait_until(serving, 120, "llama_cpp.server to serve /models", interval=0.5)
        yield Server(base, log, gguf)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def project(tmp_path: Path, llama: Server) -> Path:
    roles = "".join(f'{r} = "llama:{MODEL}"\n' for r in ROLES)
    (tmp_path / "council.toml").write_text(
        f'[providers.llama]\nbase_url = "{llama.base_url}"\nlocal = true\n'
        f"[roles]\n{roles}"
        '[council]\nmax_refinement_passes = 0\nbudget_usd = 0\nengine = "council"\n'
        "[router]\nmax_retries = 0\n"
        f'[completion]\nbackend = "llama:{MODEL}"\n',
        encoding="utf-8",
    )
    return tmp_path


def test_the_gguf_marks_its_sentinels_as_end_of_generation(llama: Server) -> None:
    """llama.cpp logged "control token '<fim_prefix>' is not marked as EOG" for the FIM
    sentinels, and rendered them as nothing, so no stop string could end a completion that
    ran past one (fault 7). The export now marks what GGUF can mark as end-of-generation
    (EOS, the FIM pad) and types the other sentinels so they are printed and `stop` works."""
    text = llama.log.read_text(errors="replace")
    assert "printing all EOG tokens" in text, text[-2000:]
    assert "is not marked as EOG" not in text
    assert "EOG token             = 0 '<|endoftext|>'" in text
    assert "EOG token             = 4 '<fim_pad>'" in text
    stopped = httpx2.post(
        f"{llama.base_url}/completions",
        json={"model": MODEL, "prompt": "x = 1\n<fim_prefix>", "max_tokens": 4, "echo": True},
        timeout=60,
    ).json()["choices"][0]["text"]
    assert "<fim_prefix>" in stopped  # printed, so a client can stop on it


def test_providers_resolves_fim_and_structured_output(project: Path) -> None:
    result = council("providers", "--json", "--refresh", cwd=project)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["reachable"] and row["model_listed"]
    # FIM: resolved (not "?") and the way that passes the canary, i.e. really works: the
    # server scrambles `suffix` (fixed sentinel ids), and the project's model reads its
    # StarCoder sentinels best in suffix-prefix-middle order
    assert row["fim"] is True and row["fim_format"] == "starcoder-spm", row
    # structured output: resolved, through the json_object grammar
    assert row["json_schema"] is False and row["json_object"] is True, row
    assert row["json_mode"] == "json_object"


#: (prefix, suffix, FIM mode) or (prompt, None, None)
PROMPTS = (
    ("def add(a, b):\n    return ", "\n", "spm"),
    ("import os\n\n\ndef home():\n    return os.", "\n", "spm"),
    ("for i in range(10):\n    ", "\n", "psm"),
    ("def fibonacci(n):\n    if n < 2:\n        return n\n    return ", None, None),
    ("class Stack:\n    def __init__(self):\n        self.items = []\n", None, None),
)


def test_greedy_decoding_matches_the_in_process_specialist(llama: Server) -> None:
    """The same weights through llama.cpp and through the project's sampler agree token for
    token (greedy, no repeat penalty), on plain and FIM prompts. The project's tokenizer
    never reads sentinels out of text (code that contains "<fim_prefix>" stays text), so
    its FIM prompts are built from ids; llama.cpp reads them from the string."""
    from providers.fim_formats import FORMATS, cut_at_sentinel
    from training.fim import fim_prompt_ids
    from training.loading import load_for_inference
    from training.sample import Generator, SamplingParams

    model, tokenizer = load_for_inference(ROOT / "training" / "default_model", dtype="float32")
    gen = Generator(model, tokenizer)
    for prefix, suffix, mode in PROMPTS:
        if mode is None:
            ids, prompt = tokenizer.encode(prefix), prefix
        else:
            ids = fim_prompt_ids(tokenizer, prefix, suffix, mode=mode)
            fmt = FORMATS["starcoder-spm" if mode == "spm" else "starcoder"]
            prompt = fmt.build(prefix, suffix)
        ours = gen.generate([ids], SamplingParams(max_new_tokens=12, temperature=0.0))[0].text
        theirs = cut_at_sentinel(llama.completion(prompt, max_tokens=12))
        # our sampler ends at a sentinel; llama.cpp runs on past the ones it does not
        # treat as end-of-generation, so compare up to where ours stopped
        assert theirs[: len(ours)] == ours, (prefix, mode, ours, theirs)


def test_council_complete_through_the_server(project: Path) -> None:
    """`council complete` asks the server the way the canary found works (the raw SPM prompt)
    and gets a suggestion.

    It cannot be compared token for token with the in-process specialist on the same file,
    and the model itself is compared above instead: the specialist heals the prompt's last
    token (a prompt ending in "return " is re-tokenised with the answer), which a server
    taking text cannot do, and llama-cpp-python applies a repeat penalty of 1.1 unless asked
    otherwise, which the OpenAI-style request the router sends has no field for."""
    source = project / "geometry.py"
    source.write_text("def area(w, h):\n    return \n", encoding="utf-8")
    result = council("complete", f"{source}:2:11", "--json", cwd=project)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["via"] == "fim-raw:starcoder-spm", answer
    assert answer["reason"] in ("ok", "empty") and answer["raw"] is not None, answer


def test_council_run_completes_every_stage_through_the_grammar(project: Path) -> None:
    """Every role on the 5M-parameter model: the code is poor, but each stage must get
    parsable JSON through the server's grammar, within its context."""
    result = council(
        "run", "Write a function add(a, b) that returns their sum", "--mode", "generate",
        "--json", cwd=project, timeout=600,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["status"] in ("approved", "best_effort"), report["summary"]
    stages = {(t["stage"], t["role"]) for t in report["transcript"] if not t["error"]}
    assert {("decompose", "orchestrator"), ("generate", "generator")} <= stages, stages
    assert not any("maximum context length" in e for e in report["errors"])


def _connections_to(port: int) -> int:
    """ESTABLISHED TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    hexport = f"{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if remote.endswith(f":{hexport}") and state == "01":
            count += 1
    return count


def test_cancelling_a_run_closes_the_server_request(project: Path, llama: Server) -> None:
    port = int(llama.base_url.rsplit(":", 1)[1].split("/")[0])
    env = {**os.environ, "HOME": str(project), "XDG_CACHE_HOME": str(project / ".cache")}
    env["COUNCIL_CONFIG"] = str(project / "council.toml")
    process = subprocess.Popen(
        [sys.executable, "-m", "slm_council", "run", "Write a long module", "--mode", "generate"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # a shell without job control starts background jobs with SIGINT ignored, and the
        # child would inherit that: give it the default, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip

    def connected() -> bool:
        assert process.poll() is None, process.communicate()[1][-2000:]
        return _connections_to(port) > 0

    try:
        wait_until(connected, 60, "the run to reach the server")
        process.send_signal(signal.SIGINT)  # Ctrl-C
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    wait_until(lambda: _connections_to(port) == 0, 10, "the run's connection to close")
    # and the server is still healthy for the next client
    assert httpx2.get(f"{llama.base_url}/models", timeout=10).status_code == 200

"""Run model-generated code and its tests for real, contained by the OS, and always come back.

The tester's pytest run is evidence for the synthesiser, so it has to happen, and it has to
survive the code it runs. Generated code is careless rather than malicious, but careless code
loops forever, forks in a loop, cleans up with `rm -rf`, writes to `../` or `/tmp`, reads
API keys and tries the network, from Python, from a shell or through ctypes. Every run gets
a fresh directory and a child wrapped in the layers below; whatever the child does,
`run_tests` returns an `ExecutionResult` and leaves no process behind, also when the awaiting
task is cancelled.

Layers (each active one is listed in `ExecutionResult.containment`; `council sandbox
--check` prints which this machine has, and a missing one is warned about once):

- ``fs-readonly``, ``home-hidden``, ``pid-ns``, ``netns``, ``disk-quota``: bubblewrap (see
  `council.sandbox.layers` for the choice). The whole filesystem is read-only except the
  run's own directory and a private /tmp and /dev/shm, each a size-capped tmpfs
  (`disk_mb`); home directories are empty tmpfs; a new PID namespace with its own /proc
  hides every other process; a new network namespace has nothing but its own loopback.
  The namespace's init dies with us, and the kernel then kills everything inside.
  Without bwrap, `unshare --user --net` still cuts the network where it may.
- ``cgroup-pids``, ``cgroup-memory``: one cgroup per run caps tasks (fork bombs in any
  language) and the tree's memory, and lists every descendant for the kill.
- ``process-group``: the child's session and group are SIGKILLed at the end; a /proc scan
  for the run's ``COUNCIL_SANDBOX_ID`` token catches anything that left them.
- ``rlimits``: CPU seconds, address space, file size, no core dumps, process count, set by
  the boot hook as the interpreter starts and inherited by anything it runs.
- ``env-scrubbed``: the environment is built from an allowlist, never inherited; output is
  also passed through the secret redactor.
- ``audit-hook``: `_sandbox_boot/sitecustomize.py`, loaded by every Python in the sandbox,
  refuses writes outside the writable places, network calls and process starts beyond
  ``max_processes``, so buggy Python gets a clear PermissionError and a logged violation.
  It sees only what CPython audits: it is the messenger, the OS layers are the boundary.

Known limits: running council as root, the child is root in its namespaces with every
capability dropped, so it can still *read* root-owned files that are not hidden (nothing
can be written). Nothing here stops CPU-side channels or kernel exploits: for hostile code,
use a VM.
"""

from council.sandbox.layers import Layer, check_layers
from council.sandbox.models import DEFAULT_LIMITS, CaseResult, ExecutionResult, SandboxLimits
from council.sandbox.paths import SandboxPathError, confine, safe_relative_path
from council.sandbox.runner import BOOT_DIR, run_script, run_tests

__all__ = [
    "BOOT_DIR",
    "DEFAULT_LIMITS",
    "CaseResult",
    "ExecutionResult",
    "Layer",
    "SandboxLimits",
    "SandboxPathError",
    "check_layers",
    "confine",
    "run_script",
    "run_tests",
    "safe_relative_path",
]

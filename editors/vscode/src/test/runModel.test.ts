import * as assert from "node:assert/strict";
import { test } from "node:test";

import {
  Candidate,
  callMarkdown,
  candidateDescription,
  diffSides,
  icon,
  parseRunPath,
  RunDetails,
  runDescription,
  runPath,
  stageDescription,
  stageLabel,
  testsLabel,
} from "../runModel";

const RUN: RunDetails = {
  sessionId: "abc123",
  title: "Council: Generate add",
  command: "council.generate",
  status: "approved",
  uri: "file:///ws/mathx.py",
  mode: "generate",
  startedAt: 1_700_000_000,
  finishedAt: 1_700_000_003,
  seconds: 3.25,
  stage: null,
  tokens: 1234,
  costUsd: 0.00123,
  summary: "approved: Replaced `add`.",
  query: "Implement add",
  councilMode: "council",
  stages: [],
  original: { path: "mathx.py", text: "def add(a, b):\n    pass\n\n\ndef keep():\n    return 1\n" },
  candidates: [],
  suites: [],
  tests: [],
  choice: null,
  answer: null,
  transcript: [],
  errors: [],
};

function candidate(over: Partial<Candidate>): Candidate {
  return {
    id: "c1",
    passNo: 1,
    provider: "lb",
    model: "gen",
    chosen: true,
    evidence: "c1 (pass 1), tests 2/2",
    passed: 2,
    failed: 0,
    files: [{ path: "mathx.py", content: "def add(a, b):\n    return a + b\n" }],
    proposed: "def add(a, b):\n    return a + b\n\n\ndef keep():\n    return 1\n",
    ...over,
  };
}

test("runs and stages are described with time, tokens and cost", () => {
  assert.equal(runDescription(RUN), "approved · 3.25 s · 1234 tok · $0.0012");
  assert.equal(
    runDescription({ ...RUN, status: "running", stage: "review: tester", seconds: 12.34 }),
    "running · review: tester · 12.3 s · 1234 tok · $0.0012",
  );
  const stage = {
    stage: "generate",
    role: "generator",
    passNo: 2,
    provider: "lb",
    model: "gen",
    status: "ok" as const,
    offset: 0.5,
    seconds: 0.123,
    tokens: 345,
    costUsd: 0.0001,
    detail: "",
  };
  assert.equal(stageLabel(stage), "generate · generator (pass 2)");
  assert.equal(stageDescription(stage), "lb:gen · 0.12 s · 345 tok · $0.0001");
  assert.equal(stageDescription({ ...stage, status: "running", seconds: null, provider: null }), "- · running · 345 tok · $0.0001");
  assert.equal(icon("running"), "sync~spin");
  assert.equal(icon("passed"), "pass");
  assert.equal(icon("failed"), "error");
  assert.equal(icon("unfinished"), "circle-slash");
});

test("a candidate's diff is the original against the file with the candidate applied", () => {
  const c = candidate({});
  assert.deepEqual(diffSides(RUN, c), { path: "mathx.py", before: RUN.original!.text, after: c.proposed });
  assert.equal(candidateDescription(c), "lb:gen · tests 2/2");
  // no proposal (another file, e.g. a test module): the candidate's own file against nothing
  const other = candidate({ proposed: null, files: [{ path: "tests/test_mathx.py", content: "def test_x(): pass\n" }] });
  assert.deepEqual(diffSides(RUN, other), { path: "tests/test_mathx.py", before: "", after: "def test_x(): pass\n" });
  // no target at all (a free-form run)
  assert.deepEqual(diffSides({ ...RUN, original: null }, candidate({ proposed: null })).before, "");
});

test("tests are counted, transcript calls become documents, paths round-trip", () => {
  const t = { candidate: "c1", suite: "s1", test: "test_a", outcome: "passed", message: "", disputed: false };
  assert.equal(testsLabel([t, { ...t, outcome: "failed" }]), "Tests (1/2 passed)");
  const md = callMarkdown(
    RUN,
    { stage: "generate", role: "generator", passNo: 1, provider: "lb", model: "gen", seconds: 0.5, prompt: "write ```add```", response: "{}", error: null },
    0,
  );
  assert.match(md, /^# 1\. generate · generator · lb:gen/);
  assert.match(md, /````text\nwrite ```add```\n````/); // the fence outlasts the prompt's own
  const path = runPath("abc123", "candidate", "c1/pkg/mathx.py");
  assert.deepEqual(parseRunPath(path), { session: "abc123", kind: "candidate", rest: "c1/pkg/mathx.py" });
  assert.equal(parseRunPath("/nothing"), undefined);
});

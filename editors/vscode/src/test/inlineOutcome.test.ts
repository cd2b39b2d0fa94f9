import * as assert from "node:assert/strict";
import { test } from "node:test";

import { explainMarkdown, explainParams, InlineOutcome, newer, outcomeView } from "../inlineOutcome";

const record = (over: Partial<InlineOutcome>): InlineOutcome => ({
  seq: 1,
  uri: "file:///ws/m%20x.py",
  trigger: "automatic",
  reason: "ok",
  outcome: "suggestion",
  items: 1,
  handlerMs: 12.4,
  modelMs: 10.2,
  ...over,
});

test("outcomeView says why there was no suggestion", () => {
  const empty = outcomeView(record({ reason: "empty", outcome: "empty after post-processing", items: 0 }));
  assert.equal(empty.text, "$(sparkle) Council: no suggestion — empty after post-processing");
  assert.equal(empty.severity, undefined);
  assert.match(empty.tooltip, /automatic request in `m x\.py`, 12 ms \(10 ms in the model\)/);
  assert.match(empty.tooltip, /Click to explain/);
  const skipped = outcomeView(record({ reason: "skipped", outcome: "skipped mid-word", items: 0, modelMs: 0 }));
  assert.equal(skipped.text, "$(sparkle) Council: no suggestion — skipped mid-word");
  assert.doesNotMatch(skipped.tooltip, /in the model/);
  const failed = outcomeView(record({ reason: "timeout", outcome: "timeout", items: 0 }));
  assert.equal(failed.text, "$(warning) Council: no suggestion — timeout");
  assert.equal(failed.severity, "warning");
});

test("outcomeView counts candidates and mentions the manual trigger", () => {
  assert.equal(outcomeView(record({})).text, "$(sparkle) Council: suggestion");
  assert.equal(outcomeView(record({ items: 3 })).text, "$(sparkle) Council: 3 suggestions");
  const manual = outcomeView(record({ reason: "manual", outcome: "manual trigger", items: 0 }), {
    trigger: "manual",
    candidates: 2,
  });
  assert.equal(manual.text, "$(sparkle) Council: no suggestion — manual trigger");
  assert.match(manual.tooltip, /press Alt\+\\/);
  assert.match(manual.tooltip, /Up to 2 candidates/);
});

test("newer keeps the record with the higher sequence number", () => {
  const a = record({ seq: 4 });
  const b = record({ seq: 5 });
  assert.equal(newer(undefined, a), a);
  assert.equal(newer(a, b), b);
  assert.equal(newer(b, a), b);
  assert.equal(newer(a, null), a);
  assert.equal(newer(undefined, undefined), undefined);
});

test("explainParams sends the active Python document only; explainMarkdown falls back", () => {
  assert.deepEqual(explainParams("file:///m.py", "python"), { uri: "file:///m.py" });
  assert.deepEqual(explainParams("file:///notes.md", "markdown"), {});
  assert.deepEqual(explainParams(undefined, undefined), {});
  assert.equal(explainMarkdown({ found: true, markdown: "# X\n" }), "# X\n");
  assert.match(explainMarkdown(undefined), /sent no explanation/);
});

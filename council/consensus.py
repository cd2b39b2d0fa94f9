"""Consensus mode (`council deliberate`), after karpathy/llm-council (seed 003).

1. Every member answers the question on its own, in parallel.
2. Every member that answered ranks the *other* answers. Answers are anonymised as letters
   and shuffled separately for each ranker, so neither identity nor position can be favoured.
3. Rankings are aggregated with a Borda count (each ranker gives k-1 points to its first of k
   answers, down to 0); each member's agreement with the aggregate is Kendall's tau between
   its ranking and the aggregate order of the same answers (1 = identical, -1 = reversed).
4. A chairman writes the final answer from the ranked answers and lists the points where
   members dissented.

Members that fail to answer or to rank are reported by name with the reason; they are never
dropped silently, and the aggregate says how many rankings it rests on.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Literal

import anyio
from pydantic import BaseModel, Field

from council import prompts
from council.events import Events
from council.run_scope import RunScope
from council.schemas import RoleUsage, TranscriptEntry, _Out
from council.structured import ask
from providers.base import ChatRequest, Message
from providers.budget import Ledger
from providers.errors import PolicyError, ProviderError
from providers.router import Router
from providers.settings import ROLE_NAMES, Tier

ROLE = "deliberate"
Emit = Callable[..., None]


class RankingReason(_Out):
    label: str
    reason: str = ""


class RankingReply(_Out):
    ranking: list[str] = Field(description="Every answer's label exactly once, best first")
    reasons: list[RankingReason] = Field(default_factory=list)


class ChairmanReply(_Out):
    answer: str = Field(description="The council's final answer, in Markdown")
    dissent: list[str] = Field(
        default_factory=list, description="Points where members disagreed, and who"
    )


class MemberAnswer(BaseModel):
    member: str
    text: str | None = None
    error: str | None = None
    seconds: float = 0.0


class Standing(BaseModel):
    member: str
    position: int
    borda: float
    mean_rank: float | None
    rankings_received: int
    agreement: float | None = Field(
        None, description="Kendall tau between this member's ranking and the aggregate"
    )


class DeliberationResult(BaseModel):
    session_id: str
    status: Literal["approved", "best_effort", "failed"]
    question: str
    answers: list[MemberAnswer]
    rankings: dict[str, list[str]] = Field(
        default_factory=dict, description="ranker -> members it ranked, best first"
    )
    standings: list[Standing] = Field(default_factory=list)
    chairman: str | None = None
    final_answer: str = ""
    dissent: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    usage: list[RoleUsage] = Field(default_factory=list)
    cost_usd: float = 0.0
    total_duration_secs: float = 0.0
    transcript: list[TranscriptEntry] = Field(default_factory=list)


# -- aggregation (pure functions) -----------------------------------------------------------


def borda(rankings: dict[str, list[str]], members: Sequence[str]) -> list[Standing]:
    """Borda points and mean rank per member, best first (ties broken by mean rank, then name)."""
    points = {m: 0.0 for m in members}
    positions: dict[str, list[int]] = {m: [] for m in members}
    for order in rankings.values():
        k = len(order)
        for index, member in enumerate(order):
            points[member] += k - 1 - index
            positions[member].append(index + 1)
    aggregate = sorted(
        members,
        key=lambda m: (
            -points[m],
            sum(positions[m]) / len(positions[m]) if positions[m] else float("inf"),
            m,
        ),
    )
    return [
        Standing(
            member=m,
            position=i + 1,
            borda=points[m],
            mean_rank=round(sum(positions[m]) / len(positions[m]), 3) if positions[m] else None,
            rankings_received=len(positions[m]),
            agreement=(
                kendall_tau(rankings[m], aggregate)
                if m in rankings and len(rankings[m]) > 1
                else None
            ),
        )
        for i, m in enumerate(aggregate)
    ]


def kendall_tau(order: Sequence[str], reference: Sequence[str]) -> float:
    """Kendall's tau-a of `order` against `reference`, over the items `order` contains."""
    place = {item: i for i, item in enumerate(reference)}
    items = [item for item in order if item in place]
    pairs = list(combinations(range(len(items)), 2))
    if not pairs:
        return 1.0
    concordant = sum(1 for i, j in pairs if place[items[i]] < place[items[j]])
    return round((2 * concordant - len(pairs)) / len(pairs), 3)


def anonymise(members: Sequence[str], rng: random.Random) -> dict[str, str]:
    """label -> member, in a fresh random order."""
    shuffled = list(members)
    rng.shuffle(shuffled)
    return {string.ascii_uppercase[i]: m for i, m in enumerate(shuffled)}


def decode_ranking(reply: RankingReply, labels: dict[str, str]) -> list[str]:
    """Labels to members; unknown or repeated labels dropped, missing ones appended."""
    seen: list[str] = []
    for raw in reply.ranking:
        label = raw.strip().strip(".)(:").removeprefix("Response ").strip().upper()[:1]
        if label in labels and labels[label] not in seen:
            seen.append(labels[label])
    seen += [m for m in labels.values() if m not in seen]
    return seen


# -- the deliberation -----------------------------------------------------------------------


def default_members(router: Router) -> list[Tier]:
    configured = router.settings.deliberate.members
    if configured:
        return list(configured)
    seen: dict[str, Tier] = {}
    for role in ROLE_NAMES:
        tiers = router.settings.roles.tiers(role)
        if role != "router" and tiers and tiers[0].target not in seen:
            seen[tiers[0].target] = tiers[0]
    return list(seen.values())


async def deliberate(
    router: Router,
    question: str,
    *,
    members: Sequence[Tier] | None = None,
    events: Events | None = None,
    seed: int | None = None,
    session_id: str | None = None,
) -> DeliberationResult:
    scope = RunScope.open(router, events=events, session_id=session_id)
    tiers = list(members or default_members(router))
    names = [t.target for t in tiers]
    rng = random.Random(seed if seed is not None else scope.session_id)
    ledger, transcript, emit = scope.ledger, scope.transcript, scope.emit
    result = DeliberationResult(
        session_id=scope.session_id,
        status="failed",
        question=question,
        answers=[MemberAnswer(member=n) for n in names],
    )
    with scope.lifecycle(f"deliberate with {len(tiers)} members"):
        try:
            await _answers(router, question, tiers, result, ledger, transcript, emit)
            answered = [a.member for a in result.answers if a.text]
            if len(answered) >= 2:
                await _rankings(router, question, tiers, result, ledger, transcript, emit, rng)
                result.standings = borda(result.rankings, answered)
            elif answered:
                result.standings = borda({}, answered)
            if answered:
                await _chairman(router, question, result, ledger, transcript, emit)
        except PolicyError as exc:
            result.failed.append(f"stopped: {exc}")
        finally:
            scope.finish(result)
        scope.outcome = result.status
    return result


async def _answers(
    router: Router,
    question: str,
    tiers: Sequence[Tier],
    result: DeliberationResult,
    ledger: Ledger,
    transcript: list[TranscriptEntry],
    emit: Emit,
) -> None:
    emit("stage_started", stage="answer", role=ROLE, percent=5)
    request = ChatRequest(
        messages=(
            Message(role="system", content=prompts.CONSENSUS_MEMBER),
            Message(role="user", content=question),
        ),
        max_tokens=2048,
    )

    async def one(index: int, tier: Tier) -> None:
        answer = result.answers[index]
        t0 = time.monotonic()
        try:
            routed = await router.chat(ROLE, request, ledger=ledger, tiers=[tier])
            answer.text = routed.result.text.strip() or None
            if answer.text is None:
                answer.error = "empty answer"
        except PolicyError:
            raise
        except ProviderError as exc:
            answer.error = str(exc)
        answer.seconds = round(time.monotonic() - t0, 3)
        if answer.error:
            result.failed.append(f"{tier.target} did not answer: {answer.error}")
        transcript.append(
            TranscriptEntry(
                stage="answer",
                role=ROLE,
                pass_no=1,
                provider=tier.provider,
                model=tier.model,
                prompt=question,
                response=answer.text or "",
                error=answer.error,
                seconds=answer.seconds,
            )
        )

    async with anyio.create_task_group() as group:
        for index, tier in enumerate(tiers):
            group.start_soon(one, index, tier)
    ok = sum(1 for a in result.answers if a.text)
    emit(
        "stage_finished",
        stage="answer",
        role=ROLE,
        percent=40,
        detail=f"{ok} of {len(tiers)} members answered",
        ok=ok > 0,
    )


async def _rankings(
    router: Router,
    question: str,
    tiers: Sequence[Tier],
    result: DeliberationResult,
    ledger: Ledger,
    transcript: list[TranscriptEntry],
    emit: Emit,
    rng: random.Random,
) -> None:
    emit("stage_started", stage="rank", role=ROLE, percent=45)
    texts = {a.member: a.text for a in result.answers if a.text}
    rankers = [t for t in tiers if t.target in texts]
    # Draw every ranker's shuffle up front, so the outcome does not depend on timing.
    plans = {t.target: anonymise([m for m in texts if m != t.target], rng) for t in rankers}

    async def one(tier: Tier) -> None:
        labels = plans[tier.target]
        body = "\n\n".join(f"## Response {label}\n{texts[m]}" for label, m in labels.items())
        prompt = f"## Question\n{question}\n\n{body}\n\nLabels: {', '.join(labels)}"
        t0 = time.monotonic()
        try:
            reply, routed = await ask(
                router,
                ROLE,
                RankingReply,
                system=prompts.CONSENSUS_RANKER,
                prompt=prompt,
                ledger=ledger,
                tiers=[tier],
                max_tokens=1024,
            )
        except PolicyError:
            raise
        except ProviderError as exc:
            result.failed.append(f"{tier.target} did not rank: {exc}")
            transcript.append(
                TranscriptEntry(
                    stage="rank",
                    role=ROLE,
                    pass_no=1,
                    provider=tier.provider,
                    model=tier.model,
                    prompt=prompt,
                    error=str(exc),
                )
            )
            return
        result.rankings[tier.target] = decode_ranking(reply, labels)
        transcript.append(
            TranscriptEntry(
                stage="rank",
                role=ROLE,
                pass_no=1,
                provider=routed.result.provider,
                model=routed.result.model,
                prompt=prompt,
                response=routed.result.text,
                seconds=round(time.monotonic() - t0, 3),
            )
        )

    async with anyio.create_task_group() as group:
        for tier in rankers:
            group.start_soon(one, tier)
    emit(
        "stage_finished",
        stage="rank",
        role=ROLE,
        percent=75,
        detail=f"{len(result.rankings)} of {len(rankers)} rankings",
        ok=bool(result.rankings),
    )


async def _chairman(
    router: Router,
    question: str,
    result: DeliberationResult,
    ledger: Ledger,
    transcript: list[TranscriptEntry],
    emit: Emit,
) -> None:
    emit("stage_started", stage="synthesise", role="chairman", percent=80)
    texts = {a.member: a.text for a in result.answers if a.text}
    ranked = "\n\n".join(
        f"## Rank {s.position}: {s.member} (Borda {s.borda:g}, agreement "
        f"{'n/a' if s.agreement is None else s.agreement})\n{texts[s.member]}"
        for s in result.standings
    )
    splits = [
        f"{ranker} ranked {order[0]} first"
        for ranker, order in result.rankings.items()
        if result.standings and order and order[0] != result.standings[0].member
    ]
    prompt = f"## Question\n{question}\n\n{ranked}\n\n## Where the reviewers disagreed\n" + (
        "\n".join(f"- {s}" for s in splits) or "- nowhere on the winner"
    )
    chair_tiers = router.settings.deliberate.chairman or None
    role = ROLE if chair_tiers else "orchestrator"
    try:
        reply, routed = await ask(
            router,
            role,
            ChairmanReply,
            system=prompts.CONSENSUS_CHAIRMAN,
            prompt=prompt,
            ledger=ledger,
            tiers=chair_tiers,
            max_tokens=3072,
        )
    except PolicyError:
        raise
    except ProviderError as exc:
        result.failed.append(f"chairman failed, using the top-ranked answer: {exc}")
        result.final_answer = texts[result.standings[0].member]
        result.dissent = splits
        result.status = "best_effort"
        emit(
            "stage_finished",
            stage="synthesise",
            role="chairman",
            ok=False,
            detail=str(exc)[:200],
            percent=95,
        )
        return
    result.chairman = f"{routed.result.provider}:{routed.result.model}"
    result.final_answer = reply.answer
    result.dissent = reply.dissent or splits
    result.status = "approved"
    transcript.append(
        TranscriptEntry(
            stage="synthesise",
            role="chairman",
            pass_no=1,
            provider=routed.result.provider,
            model=routed.result.model,
            prompt=prompt,
            response=routed.result.text,
        )
    )
    emit(
        "stage_finished",
        stage="synthesise",
        role="chairman",
        percent=95,
        provider=routed.result.provider,
        model=routed.result.model,
    )

"""One lab job's state, shared by the HTTP handlers and its worker (jobs.py): the settings, the events published
so far (bounded), pause and the slider, recovery-view questions, and the turn-taking of its two Trainers."""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TERMINAL_EVENTS = ("done", "stopped", "error")
EVENTS_KEPT = 20000  # events a job keeps for late subscribers (bounded memory; ~30 min at 10 rounds a second)


@dataclass
class RecoveryQuestion:
    """A recovery-view request, answered by the worker between two steps (never while a model trains)."""

    position: int
    token: str
    answered: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: str | None = None


class Stopped(Exception):
    """Raised inside a Trainer's progress callback to end its `fit` when the job is reset."""


@dataclass
class JobSettings:
    """What the client asked for (validated at the HTTP boundary, app.py)."""

    task: str = "toy-translation"
    reward_weight: float = 0.5
    steps: int = 300
    model: str = "small"
    strategy: str = "reinforce"
    seed: int = 0
    eval_every: int = 10
    eval_limit: int = 64
    batch_size: int = 32
    learning_rate: float = 2e-3
    reward_learning_rate: float = 3e-4  # the reward-blended model's once it warm-starts (jobs.py)
    test_limit: int = 200


class Lockstep:
    """Threads that take strict turns: party i runs only while `current == i`; `hand_over(i)` passes the turn to
    the next party that has not finished."""

    def __init__(self, parties: int):
        self.condition = threading.Condition()
        self.current = 0
        self.finished = [False] * parties
        self.stopped = False

    def wait_for(self, party: int) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.current == party or self.stopped)
            if self.stopped:
                raise Stopped

    def hand_over(self, party: int, finished: bool = False) -> None:
        with self.condition:
            self.finished[party] = self.finished[party] or finished
            parties = len(self.finished)
            for offset in range(1, parties + 1):
                following = (party + offset) % parties
                if not self.finished[following]:
                    self.current = following
                    break
            self.condition.notify_all()

    def stop(self) -> None:
        with self.condition:
            self.stopped = True
            self.condition.notify_all()


@dataclass
class Job:
    """One lab job: its settings, its state and the events published so far."""

    id: str
    settings: JobSettings
    run_dir: Path
    session: str | None = None
    state: str = "starting"  # starting | running | paused | done | stopped | error
    reward_weight: float = 0.5
    paused: bool = False
    created: float = field(default_factory=time.time)
    events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=EVENTS_KEPT))
    sequence: int = 0
    error: str | None = None
    ended: bool = False  # the worker published its last event (done, stopped or error)
    questions: list = field(default_factory=list)  # RecoveryQuestion, oldest first
    condition: threading.Condition = field(default_factory=threading.Condition)
    lockstep: Lockstep = field(default_factory=lambda: Lockstep(2))
    thread: threading.Thread | None = None

    @property
    def live(self) -> bool:
        return self.state in ("starting", "running", "paused")

    def publish(self, event: dict) -> None:
        with self.condition:
            self.sequence += 1
            if "beliefs" in event:  # memory stays bounded: only the latest event keeps the heat map
                for index in range(len(self.events) - 1, -1, -1):
                    number, earlier = self.events[index]
                    if "beliefs" in earlier:
                        self.events[index] = (number, {k: v for k, v in earlier.items() if k != "beliefs"})
                        break
            self.events.append((self.sequence, {"job": self.id, **event}))
            self.ended = self.ended or event["type"] in TERMINAL_EVENTS
            self.condition.notify_all()

    def events_after(self, sequence: int) -> list[tuple[int, dict]]:
        """The kept events published after `sequence` (those dropped from the front are skipped)."""
        with self.condition:
            return [(number, event) for number, event in self.events if number > sequence]

    def set_reward_weight(self, weight: float) -> None:
        self.reward_weight = weight  # read by the worker before the next step of the reward-blended model

    def set_paused(self, paused: bool) -> None:
        with self.condition:
            self.paused = paused
            if self.live:
                self.state = "paused" if paused else "running"
            self.condition.notify_all()

    def ask(self, position: int, token: str) -> RecoveryQuestion:
        question = RecoveryQuestion(position, token)
        with self.condition:
            self.questions.append(question)
            self.condition.notify_all()
        return question

    def drop_questions(self, reason: str) -> None:
        with self.condition:
            pending, self.questions = self.questions, []
        for question in pending:
            question.error = reason
            question.answered.set()

    def stop(self) -> None:
        with self.condition:
            if self.live:
                self.state = "stopped"
            self.condition.notify_all()
        self.lockstep.stop()

    def describe(self) -> dict:
        return {"id": self.id, "state": self.state, "reward_weight": self.reward_weight, "paused": self.paused,
                "run_dir": self.run_dir.name, "settings": dataclasses.asdict(self.settings), "error": self.error}


__all__ = ["EVENTS_KEPT", "TERMINAL_EVENTS", "Job", "JobSettings", "Lockstep", "RecoveryQuestion", "Stopped"]

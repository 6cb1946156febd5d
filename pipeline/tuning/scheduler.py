"""ASHA whose rungs survive `--resume`.

Tune restores an interrupted experiment's trials but not its scheduler: a fresh ASHA would judge the continuing
trials against nobody, and let weak ones run to the end. This one writes its state after every decision and reads
it back on the first trial it sees after a restore.
"""

from __future__ import annotations

import os
import pickle

from ray.tune.schedulers import ASHAScheduler


class ResumableASHA(ASHAScheduler):
    def __init__(self, state_file: str, **kwargs):
        super().__init__(**kwargs)
        self._state_file = state_file
        self._state_loaded = False

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._state_loaded:
            self._state_loaded = True
            if os.path.isfile(self._state_file):  # a resumed search: the rungs recorded before the interruption
                self.restore(self._state_file)
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        self._persist()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._persist()

    def _persist(self) -> None:
        """Atomically: an interruption mid-write leaves the previous state, never half a file."""
        tmp = f"{self._state_file}.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(self.__dict__, f)
        os.replace(tmp, self._state_file)

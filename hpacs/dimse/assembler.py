"""Reassembles DIMSE messages from P-DATA value fragments (PS3.7 §6.3, PS3.8 Annex E).

Sans-IO: feed it PDVs, get back a command (once its last fragment is in) and the data set's
fragments one by one, so that a data set streams to disk instead of piling up in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hpacs.dimse.commands import COMMAND_DATA_SET_TYPE, NO_DATASET, Command, decode_command

#: A command set is a handful of short elements; more than this is an attack or a bug.
MAX_COMMAND_BYTES = 64 * 1024


class DimseError(ValueError):
    """The peer broke DIMSE message framing; the association must be aborted."""


@dataclass(frozen=True, slots=True)
class CommandReceived:
    context_id: int
    command: Command
    has_dataset: bool


@dataclass(frozen=True, slots=True)
class DatasetFragment:
    context_id: int
    data: bytes | memoryview
    last: bool


class MessageAssembler:
    def __init__(self) -> None:
        self._command = bytearray()
        self._command_context: int | None = None
        self._dataset_context: int | None = None

    @property
    def idle(self) -> bool:
        """No message is half-received."""
        return self._command_context is None and self._dataset_context is None

    def receive(
        self, context_id: int, is_command: bool, is_last: bool, data: bytes | memoryview
    ) -> CommandReceived | DatasetFragment | None:
        """Take one PDV; return what it completes (or the data set fragment it carries)."""
        if is_command:
            if self._dataset_context is not None:
                raise DimseError("command fragment received while a data set was expected")
            if self._command_context is not None and self._command_context != context_id:
                raise DimseError("command fragments on two presentation contexts")
            self._command_context = context_id
            if len(self._command) + len(data) > MAX_COMMAND_BYTES:
                raise DimseError("command set larger than 64 KiB")
            self._command += data
            if not is_last:
                return None
            raw = bytes(self._command)
            self._command.clear()
            self._command_context = None
            try:
                command = decode_command(raw)
            except ValueError as exc:
                raise DimseError(f"undecodable command set: {exc}") from None
            has_dataset = command.get(COMMAND_DATA_SET_TYPE, NO_DATASET) != NO_DATASET
            if has_dataset:
                self._dataset_context = context_id
            return CommandReceived(context_id, command, has_dataset)
        if self._dataset_context is None:
            raise DimseError("data set fragment received without a command announcing it")
        if context_id != self._dataset_context:
            raise DimseError("data set fragment on another presentation context than its command")
        if is_last:
            self._dataset_context = None
        return DatasetFragment(context_id, data, is_last)

    def dataset_run(self, pdvs: Sequence[tuple], start: int) -> tuple[int, bool]:
        """Take the PDVs ((context_id, is_command, is_last, data) tuples such as
        ``hpacs.ul.PDV``) from ``pdvs[start]`` on that are fragments of the data set being
        received (up to its last one): returns (index after them, whether the last was among
        them). The caller hands them on in one go (one write for the run) instead of one
        ``receive`` each; the PDV where the run stops (a command, or a fragment on another
        context: an error) is left for ``receive``."""
        ctx = self._dataset_context
        if ctx is None:
            return start, False
        i, n = start, len(pdvs)
        while i < n:
            context_id, is_command, is_last, _ = pdvs[i]
            if is_command or context_id != ctx:
                break
            i += 1
            if is_last:
                self._dataset_context = None
                return i, True
        return i, False

"""Phase 3, for the code interpreter: run the model's code calls in the session's kernel.

Calls run one after another (they share one kernel, as they would in a notebook). Every output
is published as a step delta the moment it arrives; images and the files the code writes become
file objects owned by the run's user. What the model reads back is derived from the stored
outputs (`CodeInterpreterToolCall.model_output`), so a resumed run sees exactly the same.
"""

from __future__ import annotations

import logging

from ..kernels import KernelCapacityError, Output
from ..store import FileStore, StoreTx
from ..tools.code_interpreter import (
    MAX_WRITTEN_BYTES,
    MAX_WRITTEN_FILES,
    CodeInterpreter,
    CodeInterpreterUnavailable,
    InputFile,
    parse_code,
    saved_note,
)
from ..tools.resources import resource_ids
from ..types import Run
from ..types.objects import CodeImage, CodeImageOutput, CodeLogsOutput, CodeOutput
from ._steps import RunRecorder
from ._stream import AccumulatedCall

OUTPUT_PURPOSE = "assistants_output"
MAX_IMAGES = 10
"""Images kept from one execution; a display loop must not fill the file store."""

logger = logging.getLogger(__name__)


async def input_files(tx: StoreTx, files: FileStore, owner: str, run: Run) -> list[InputFile]:
    """Files meant for the code interpreter: the assistant's, the thread's, and message attachments."""
    ids = await resource_ids(tx, owner, run, "code_interpreter", "file_ids")
    ids.extend(await tx.attached_file_ids(run.thread_id, "code_interpreter"))
    stored = await tx.stored_files(ids, owner=owner)
    return [InputFile(file_id=f.id, filename=f.filename, path=files.locate(path)) for f, path in stored]


class CodeCalls:
    """Runs a step's code-interpreter calls and records their outputs."""

    def __init__(self, recorder: RunRecorder, interpreter: CodeInterpreter, files: FileStore, inputs: list[InputFile]) -> None:
        self.recorder = recorder
        self.interpreter = interpreter
        self.files = files
        self.inputs = inputs

    async def run(self, calls: list[AccumulatedCall]) -> dict[str, list[CodeOutput]]:
        """Each call's outputs by call id, in call order."""
        return {call.id: await self._run_one(call) for call in calls}

    async def _run_one(self, call: AccumulatedCall) -> list[CodeOutput]:
        outputs: list[CodeOutput] = []
        images: list[Output] = []
        recorder = self.recorder
        recorder.partial_outputs[call.id] = outputs
        owner = recorder.owner

        async def emit(output: Output) -> None:
            if output.type == "image":
                images.append(output)
                if len(images) > MAX_IMAGES:
                    if len(images) == MAX_IMAGES + 1:
                        log(f"\nLimit: only the first {MAX_IMAGES} images of one run are kept.\n")
                    return
                file = await self.files.save(
                    recorder.store, owner, filename=f"image-{len(outputs) + 1}.png", purpose=OUTPUT_PURPOSE, content=output.png
                )
                outputs.append(CodeImageOutput(image=CodeImage(file_id=file.id)))
                recorder.code_output_delta(call.index, len(outputs) - 1, {"type": "image", "image": {"file_id": file.id}})
            elif output.logs:
                log(output.logs)

        def log(text: str) -> None:
            last = outputs[-1] if outputs else None
            if isinstance(last, CodeLogsOutput):
                outputs[-1] = CodeLogsOutput(logs=last.logs + text)
            else:
                outputs.append(CodeLogsOutput(logs=text))
            recorder.code_output_delta(call.index, len(outputs) - 1, {"type": "logs", "logs": text})

        code, problem = parse_code(call.arguments)
        if problem is not None:
            log(problem)
            return outputs
        try:
            result, written = await self.interpreter.execute(
                owner=owner, session=recorder.run.thread_id, code=code, inputs=self.inputs, emit=emit
            )
        except (CodeInterpreterUnavailable, KernelCapacityError) as exc:
            log(f"Error: {exc.message}")
            return outputs
        except Exception:
            # A kernel that cannot start or answer is the tool failing, not the run: the model
            # (and the user) read that, and the run goes on.
            logger.exception("code interpreter call %s failed", call.id)
            log("Error: the Python kernel failed unexpectedly and could not run this code. Try again.")
            return outputs
        notes: list[str] = []
        if result.limit:
            notes.append(f"Limit: {result.limit}")
        if result.restarted:
            notes.append("The Python kernel was restarted: variables are gone; files in /mnt/data are kept.")
        if written.left_out:
            shown = ", ".join(written.left_out[:5]) + (" and more" if len(written.left_out) > 5 else "")
            notes.append(
                f"Not saved (over {MAX_WRITTEN_FILES} files or {MAX_WRITTEN_BYTES // 2**20} MB from one run): {shown}."
            )
        for item in written.files:
            file = await self.files.save(recorder.store, owner, filename=item.name, purpose=OUTPUT_PURPOSE, content=item.content)
            recorder.written[item.name] = file.id
            notes.append(saved_note(item.name, file.id))
        if notes:
            separator = "" if not outputs or _ends_line(outputs[-1]) else "\n"
            log(separator + "\n".join(notes) + "\n")
        return outputs


def _ends_line(output: CodeOutput) -> bool:
    return not isinstance(output, CodeLogsOutput) or output.logs.endswith("\n")

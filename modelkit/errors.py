"""The one error tree of modelkit.

Every failure a user can cause is a ``ModelkitError``; the CLI maps each class to a
one-line message and an exit code in a single table (``cli.EXIT_CODES``). This module
imports nothing from modelkit so that every other module can import it.
"""

from __future__ import annotations


class ModelkitError(Exception):
    """Base class: a problem with the user's input or environment, reported in one line."""


class ModelfileError(ModelkitError):
    """A Modelfile that does not parse. ``line``/``column`` are 1-based, 0 when unknown."""

    def __init__(self, message: str, *, path: str | None = None, line: int = 0,
                 column: int = 0, hint: str = "") -> None:
        self.message = message  # Ollama's words
        self.path = path
        self.line = line
        self.column = column
        self.hint = hint  # what the user can act on, when Ollama's words do not say
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "Modelfile"
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        return f"{where}: {self.message}" + (f" ({self.hint})" if self.hint else "")


class ParameterError(ModelkitError):
    """A PARAMETER with an unknown name or a value of the wrong type."""


class InvalidNameError(ModelkitError):
    """A model name that does not follow host/namespace/model:tag rules."""


class ModelNotFoundError(ModelkitError):
    """A name that resolves to no manifest in the store."""


class FileNotFoundModelkitError(ModelkitError):
    """A path the user named (Modelfile, FROM, ADAPTER) that does not exist."""


class GGUFError(ModelkitError):
    """A file that is not a valid GGUF (bad magic, truncated, inconsistent header)."""


class TemplateError(ModelkitError):
    """A TEMPLATE that is not a valid Go template."""


class StoreError(ModelkitError):
    """The models directory is unusable (permissions, corrupt manifest, lock)."""


class DigestError(ModelkitError):
    """A digest that is malformed, or content that does not match its digest."""


class QuantizationError(ModelkitError):
    """A quantization that cannot be done (unsupported type, unsupported source)."""


class UnknownQuantTypeError(QuantizationError):
    """A quantization name that is not on the menu (the CLI then prints the menu)."""


class ImatrixError(QuantizationError):
    """An importance matrix that cannot be used: unreadable, for another model, with
    non-finite weights, or missing where the chosen type needs one."""


class HubError(ModelkitError):
    """A problem talking to Hugging Face or ModelScope."""


class RegistryError(ModelkitError):
    """A problem talking to an OCI registry."""


class UnauthorizedError(RegistryError):
    """The registry or hub refused our credentials."""


class RemoteReadError(ModelkitError):
    """A remote file read by byte ranges that the server does not serve as asked
    (it ignores ``Range``, or answers an unexpected status)."""


class ConvertError(ModelkitError):
    """A Hugging Face model folder that cannot be converted to GGUF (bad or missing file,
    a tensor that disagrees with config.json, an unsupported architecture)."""

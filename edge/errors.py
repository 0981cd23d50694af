"""Errors caused by user input: the CLI prints them as one line, without a traceback."""


class SmartbinError(Exception):
    """Base class for mistakes a user can fix (bad file, bad option, bad config)."""


class ImageError(SmartbinError):
    """An image that cannot be read; the message names the image."""


class DatasetError(SmartbinError):
    """A dataset that cannot be loaded at all."""


class BundleError(SmartbinError):
    """A model bundle that does not match its manifest; the message names file and check."""


class ConfigError(SmartbinError):
    """An invalid configuration file; the message names file, key and allowed values."""


class NoPermission(SmartbinError):
    """A file this user may not read (a config made for the service's user, read without sudo): not a mistake
    in the file, so not a ConfigError."""


class ModelUnavailable(SmartbinError):
    """No model loads at start (the store's, the previous one, the configured one): a restart may fix it."""


class CameraLost(SmartbinError):
    """No frame for ``source.restart_after_s``: the service restarts (a hung driver may need a new process)."""


class FilesUnavailable(SmartbinError):
    """Files the config names exist no longer or not yet (a certificate renewal replacing them): waiting and
    trying again fixes it, unlike a ConfigError."""


class Crashed(SmartbinError):
    """The daemon met an error it did not foresee (logged with its traceback): it exits 75 after its back-off,
    and systemd starts a new process."""


class PageUnavailable(SmartbinError):
    """A bin's page that does not answer what was asked (refused, unreachable, its certificate not trusted,
    a password wanted): the message names the address and what to give."""

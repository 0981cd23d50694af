"""What moves the bin, one class per ``actuator.mode``, through gpiozero: a servo that turns to each bin's
angle, or one GPIO output (a flap) per bin. GPIOZERO_PIN_FACTORY=mock selects gpiozero's own mock pins (tests,
dev boxes). A new kind of actuator is one class here and its name in MOVERS."""

from __future__ import annotations

import time
from typing import Protocol

from edge.config import ActuatorConfig


class Mover(Protocol):
    def move(self, bin_name: str) -> None:
        """Open the bin's way for ``hold_s``, then return to neutral."""

    def close(self) -> None:
        """Let the pins go."""


class ServoMover:
    """One servo: each bin an angle, neutral between items."""

    def __init__(self, config: ActuatorConfig):
        from gpiozero import AngularServo

        self.config = config
        self.servo = AngularServo(
            config.servo_pin,
            min_angle=-90,
            max_angle=90,
            initial_angle=config.neutral_angle,
            min_pulse_width=config.min_pulse_width_ms / 1000,
            max_pulse_width=config.max_pulse_width_ms / 1000,
        )

    def move(self, bin_name: str) -> None:
        self.servo.angle = self.config.angles[bin_name]
        time.sleep(self.config.hold_s)
        self.servo.angle = self.config.neutral_angle

    def close(self) -> None:
        self.servo.close()


class FlapMover:
    """One GPIO output per bin: on opens its flap."""

    def __init__(self, config: ActuatorConfig):
        from gpiozero import DigitalOutputDevice

        self.config = config
        self.flaps = {b: DigitalOutputDevice(pin) for b, pin in config.pins.items()}

    def move(self, bin_name: str) -> None:
        flap = self.flaps[bin_name]
        flap.on()
        time.sleep(self.config.hold_s)
        flap.off()

    def close(self) -> None:
        for flap in self.flaps.values():
            flap.close()


MOVERS: dict[str, type] = {"servo": ServoMover, "pins": FlapMover}


def make_mover(config: ActuatorConfig) -> Mover:
    """The mover ``config.mode`` names."""
    return MOVERS[config.mode](config)

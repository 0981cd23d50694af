"""When a rollout's stage passes: the rule's limits, in one place, and the judgements over what was seen.

Three kinds of evidence, each compared with the bins left on the old model, never judged alone:

- the shadow (before a canary switches): on the same items, would the new model send them to the same bins?
  A model as sure as the old one that sorts some classes elsewhere fails here, before it moves a flap;
- how sure the switched bins are (mean confidence, share of items too unsure to sort);
- field signals: the share of items each bin receives, and corrections per item, with enough items to mean
  something.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.errors import SmartbinError
from edge.fleet.view import Figures, Flips
from edge.formats.labels import BINS
from edge.wire.shadow import ShadowItem


@dataclass
class Rule:
    """How a stage is watched and what it must show; the defaults are the command line's."""

    watch_s: float = 300.0
    min_frames: int = 100
    max_confidence_drop: float = 0.10
    max_unsure_rise: float = 0.20
    update_timeout_s: float = 600.0
    # the shadow: items the canaries decide before they switch, and the share that may go to another bin
    shadow_items: int = 20
    max_flips: float = 0.05
    expect_flips: list[str] = field(default_factory=list)  # "kitchen>recyclable": changes the user expects
    expect_labels: list[str] = field(default_factory=list)  # the new model's labels whose items may change
    # field signals, judged with at least min_items items a side
    min_items: int = 20
    max_bin_shift: float = 0.15
    max_correction_rise: float = 0.05


DEFAULTS = Rule()


def check_rule(rule: Rule) -> Rule:
    """SmartbinError naming the first limit that is not a finite number in its range."""
    bounded = {
        "max_confidence_drop": (0, 1),
        "max_unsure_rise": (0, 1),
        "max_flips": (0, 1),
        "max_bin_shift": (0, 1),
        "max_correction_rise": (0, 1),
    }
    for name, (low, high) in bounded.items():
        value = getattr(rule, name)
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise SmartbinError(f"{name.replace('_', '-')}: {value!r} is not a share between {low} and {high}")
    for name in ("watch_s", "update_timeout_s"):
        value = getattr(rule, name)
        if not isinstance(value, (int, float)) or not 0 < value < 1e7:
            raise SmartbinError(f"{name}: {value!r} is not a positive number of seconds")
    for name in ("min_frames", "shadow_items", "min_items"):
        if not isinstance(getattr(rule, name), int) or getattr(rule, name) < 0:
            raise SmartbinError(f"{name.replace('_', '-')}: {getattr(rule, name)!r} is not a count")
    for pair in rule.expect_flips:
        old, _, new = pair.partition(">")
        if old not in BINS or new not in BINS or old == new:
            raise SmartbinError(f"--expect-flips {pair!r}: write OLD>NEW with two bins of {', '.join(BINS)}")
    return rule


def tally(items: list[ShadowItem], rule: Rule) -> Flips:
    """The shadow's items counted: agreement, flips by (serving bin, shadow bin), expected changes apart."""
    flips = Flips()
    for item in items:
        flips.items += 1
        if item.agree:
            flips.agreed += 1
            continue
        key = f"{item.serving.bin}>{item.candidate.bin}"
        if key in rule.expect_flips or item.candidate.label in rule.expect_labels:
            flips.expected += 1
            continue
        flips.pairs[key] = flips.pairs.get(key, 0) + 1
        examples = flips.examples.setdefault(key, [])
        if len(examples) < 3:
            examples.append(item.event_id)
    return flips


def judge_shadow(flips: Flips, rule: Rule) -> str | None:
    """None when the new model would send (all but the allowed share of) the items to the same bins."""
    counted = flips.items - flips.expected
    if counted and flips.flipped > rule.max_flips * counted:
        worst = max(flips.pairs, key=flips.pairs.get)
        old, new = worst.split(">")
        return (
            f"in the shadow, the new model would send {flips.flipped} of {counted} items to another bin "
            f"({flips.flipped / counted:.0%}, the rule allows {rule.max_flips:.0%}); most: {flips.pairs[worst]} from "
            f"{old} to {new} (samples {', '.join(flips.examples[worst])}). Expected changes are said with "
            "--expect-flips OLD>NEW or --expect-labels LABEL"
        )
    return None


def judge(new: Figures, old: Figures, rule: Rule) -> str | None:
    """None when the new model's bins are as sure as the old ones' and the field agrees, else why not."""
    if new.mean_confidence is not None and old.mean_confidence is not None:
        drop = old.mean_confidence - new.mean_confidence
        if drop > rule.max_confidence_drop:
            return (
                f"mean confidence {new.mean_confidence:.3f} on the new model against {old.mean_confidence:.3f} on the "
                f"old (down {drop:.3f}, the rule allows {rule.max_confidence_drop:.3f})"
            )
    if new.low_confidence_share is not None and old.low_confidence_share is not None:
        rise = new.low_confidence_share - old.low_confidence_share
        if rise > rule.max_unsure_rise:
            return (
                f"{new.low_confidence_share:.0%} of items too unsure to sort on the new model against "
                f"{old.low_confidence_share:.0%} on the old (the rule allows {rule.max_unsure_rise:.0%} more)"
            )
    return judge_field(new, old, rule)


def judge_field(new: Figures, old: Figures, rule: Rule) -> str | None:
    """Field signals, once both sides have ``min_items`` items: the share each bin receives, and corrections."""
    if min(new.decisions, old.decisions) < max(rule.min_items, 1):
        return None
    for name in BINS:
        shift = new.share(name) - old.share(name)
        if abs(shift) > rule.max_bin_shift:
            return (
                f"the new model sends {new.share(name):.0%} of items to {name}, the old {old.share(name):.0%} "
                f"({new.decisions} and {old.decisions} items; the rule allows {rule.max_bin_shift:.0%} either way)"
            )
    rise = new.corrections / new.decisions - old.corrections / old.decisions
    if rise > rule.max_correction_rise:
        return (
            f"people corrected {new.corrections} of {new.decisions} items on the new model against "
            f"{old.corrections} of {old.decisions} on the old (the rule allows {rule.max_correction_rise:.0%} more)"
        )
    return None

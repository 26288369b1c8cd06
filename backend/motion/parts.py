"""Body parts of a skeleton, for part editing: every joint in exactly one named part.

Humanoids (found from the tree and the joint names) get `torso` (the joints above the pelvis, the pelvis,
the spine chain to the head), `left_arm`, `right_arm`, `left_leg`, `right_leg`: each limb is a whole
branch leaving the torso chain. Side comes from name hints (`_L`, `L_`, `.L`, `l_`, `Left`, `lShldr`);
arm vs leg from name hints (shoulder/arm/hand/… vs leg/thigh/knee/foot/…), else from where the branch
leaves the torso (at the pelvis: leg; higher up the spine: arm). Anything unrecognised — a branch whose
side or kind is unknown, a second branch with the same name, a non-humanoid tree — is named after its
first joint, `part_<joint name>`; without a recognisable spine the pelvis chain is `part_<joint 0 name>`.
"""

from __future__ import annotations

import re

from shared.errors import InputError

from .features import motion_root
from .skeleton import Skeleton

SPINE = re.compile(r"spine|chest|torso|back|abdomen|waist|neck|head|thorax", re.IGNORECASE)
ARM = re.compile(r"arm|shoulder|hand|elbow|clavicle|collar|wrist|finger|thumb|humerus|radius|shldr", re.IGNORECASE)
LEG = re.compile(r"leg|thigh|knee|foot|toe|hip|femur|tibia|ankle|calf|shin", re.IGNORECASE)
LEFT = re.compile(r"(?i:left)|(^|[^a-zA-Z])[lL]([^a-zA-Z]|$)|^l(?=[A-Z])")
RIGHT = re.compile(r"(?i:right)|(^|[^a-zA-Z])[rR]([^a-zA-Z]|$)|^r(?=[A-Z])")


def body_parts(skeleton: Skeleton) -> dict[str, list[int]]:
    """Part name → sorted joint indices; the parts partition the skeleton's joints."""
    r = motion_root(skeleton)
    torso = _ancestors(skeleton, r) + [r]
    spine = _spine_chain(skeleton, r)
    humanoid = bool(spine)
    torso += spine
    in_torso = set(torso)
    parts: dict[str, list[int]] = {("torso" if humanoid else f"part_{skeleton.names[0]}"): sorted(torso)}
    for j in sorted(in_torso):
        for child in skeleton.children(j):
            if child in in_torso:
                continue
            branch = _subtree(skeleton, child)
            name = _limb_name(skeleton, branch, attached_at_pelvis=j == r) if humanoid else None
            if name is None or name in parts:
                name = f"part_{skeleton.names[child]}"
            parts[name] = sorted(branch)
    return parts


def resolve_parts(skeleton: Skeleton, names: list[str]) -> list[int]:
    """Sorted joint indices of the named parts; InputError listing the valid names on an unknown one."""
    parts = body_parts(skeleton)
    unknown = [n for n in names if n not in parts]
    if unknown:
        raise InputError(f"Unknown body part {unknown[0]!r}; this skeleton has: {', '.join(parts)}")
    return sorted({j for n in names for j in parts[n]})


def _spine_chain(skeleton: Skeleton, pelvis: int) -> list[int]:
    """Joints from the pelvis' spine child up to the head, following spine-named or only children."""
    chain: list[int] = []
    j = pelvis
    while True:
        kids = skeleton.children(j)
        named = [c for c in kids if SPINE.search(skeleton.names[c])]
        if named:
            j = named[0]
        elif chain and len(kids) == 1 and not _side(skeleton.names[kids[0]]):
            j = kids[0]
        else:
            return chain
        chain.append(j)


def _limb_name(skeleton: Skeleton, branch: list[int], attached_at_pelvis: bool) -> str | None:
    names = [skeleton.names[j] for j in branch]
    side = next((s for s in map(_side, names) if s), None)
    arm = sum(bool(ARM.search(n)) for n in names)
    leg = sum(bool(LEG.search(n)) for n in names)
    kind = "arm" if arm > leg else "leg" if leg > arm else ("leg" if attached_at_pelvis else "arm")
    return f"{side}_{kind}" if side else None


def _side(name: str) -> str | None:
    left, right = bool(LEFT.search(name)), bool(RIGHT.search(name))
    return "left" if left and not right else "right" if right and not left else None


def _ancestors(skeleton: Skeleton, j: int) -> list[int]:
    out = []
    p = int(skeleton.parents[j])
    while p >= 0:
        out.append(p)
        p = int(skeleton.parents[p])
    return out[::-1]


def _subtree(skeleton: Skeleton, j: int) -> list[int]:
    out, todo = [], [j]
    while todo:
        k = todo.pop()
        out.append(k)
        todo += skeleton.children(k)
    return out

"""Quantization schemes: what is quantized, to which format, at which granularity, with which scale rule.

A `QuantSpec` describes one tensor's quantization; a `Scheme` pairs a weight spec with an optional activation
spec, lists per-module overrides by name pattern, and names the methods to run. Presets live in one table.

Example:
    >>> from lowbit.scheme import get_scheme
    >>> s = get_scheme("w4a8-fp")
    >>> s.weights.format, s.weights.group_size, s.activations.granularity
    ('fp4_e2m1', 128, 'token')
"""
from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lowbit.errors import SchemeError
from lowbit.formats import FORMATS, get_format, is_float

SCHEME_VERSION = 1
GRANULARITIES = ("tensor", "channel", "group", "token")
OBSERVERS = ("minmax", "percentile", "mse")
# absmax: s = max|x| / qmax. pow2 (ZeroQuant-FP M1): s rounded up to a power of two. pow2_row (M2): one real
# scale per row, each group's scale = row scale * 2^-k (k >= 0 integer), so FP4 -> FP8 is an exponent shift.
SCALE_RULES = ("absmax", "pow2", "pow2_row")


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    Args:
        format: a name from `lowbit.formats.FORMATS` (int2..int8, uint2..uint8, fp8_e4m3, fp8_e5m2, fp6_e3m2,
            fp6_e2m3, fp4_e2m1). Asymmetric INT specs use the signed name here; codes are stored unsigned.
        granularity: "tensor" | "channel" (one scale per output row) | "group" (g consecutive inputs of a row)
            | "token" (one scale per row of an activation, computed at run time).
        group_size: required for "group", must divide the input dimension.
        symmetric: False adds a zero point (INT formats only).
        dynamic: activations only; True computes scales per forward pass, False uses calibrated static scales.
        observer: how static ranges / weight clipping are chosen: minmax | percentile | mse.
        percentile: for observer="percentile", the quantile of |x| (e.g. 99.99).
        scale_rule: absmax | pow2 | pow2_row (see SCALE_RULES).
    """

    format: str
    granularity: str = "channel"
    group_size: int | None = None
    symmetric: bool = True
    dynamic: bool = False
    observer: str = "minmax"
    percentile: float = 99.99
    scale_rule: str = "absmax"

    def __post_init__(self) -> None:
        get_format(self.format)
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("observer", self.observer, OBSERVERS)
        _check_choice("scale_rule", self.scale_rule, SCALE_RULES)
        if self.granularity == "group":
            if not isinstance(self.group_size, int) or isinstance(self.group_size, bool) or self.group_size < 2:
                raise SchemeError(f"granularity 'group' needs an integer group_size >= 2, got {self.group_size!r}")
        elif self.group_size is not None:
            raise SchemeError(f"group_size={self.group_size} given with granularity {self.granularity!r}; "
                              "set granularity: group or drop group_size")
        if not self.symmetric and is_float(get_format(self.format)):
            raise SchemeError(f"{self.format} is a float format: asymmetric (zero-point) quantization applies "
                              "to INT formats only")
        if self.format.startswith("uint"):
            raise SchemeError(f"{self.format!r}: name the signed format and set symmetric: false for a zero point")
        if self.scale_rule == "pow2_row" and self.granularity != "group":
            raise SchemeError("scale_rule 'pow2_row' (ZeroQuant-FP M2) constrains group scales: "
                              "it needs granularity 'group'")
        if not 0 < self.percentile <= 100:
            raise SchemeError(f"percentile must be in (0, 100], got {self.percentile}")

    @property
    def fmt(self):
        """The number format object (IntFormat / FPFormat)."""
        f = get_format(self.format)
        return get_format("u" + self.format) if not self.symmetric else f

    @property
    def bits(self) -> int:
        return self.fmt.bits

    def describe(self) -> str:
        g = f"g{self.group_size}" if self.granularity == "group" else self.granularity
        extra = "" if self.symmetric else " asym"
        mode = (" dynamic" if self.dynamic else " static") if self.granularity in ("token", "tensor") else ""
        return f"{self.format} {g}{extra}{mode}"


@dataclass(frozen=True)
class Override:
    """Per-module exception: modules whose qualified name matches `pattern` (fnmatch glob, or `re:` + regex)
    are skipped (`skip=True`) or use other weight/activation specs."""

    pattern: str
    skip: bool = False
    weights: QuantSpec | None = None
    activations: QuantSpec | None = None
    keep_activations_fp: bool = False

    def matches(self, name: str) -> bool:
        if self.pattern.startswith("re:"):
            return re.search(self.pattern[3:], name) is not None
        return fnmatch.fnmatchcase(name, self.pattern)


# Heads and classifiers stay in higher precision by default (the papers all keep them; they are a small share
# of the weights and the most sensitive). Embeddings and norms are not Linear layers, so they are never touched.
DEFAULT_SKIP = ("lm_head", "*.lm_head", "classifier", "*.classifier", "*classifier.*", "score", "pooler.*",
                "*.pooler.*", "cls.*", "head", "*.head")


@dataclass(frozen=True)
class Scheme:
    """A whole model's quantization recipe.

    Args:
        name: for reports.
        weights: spec for Linear weights.
        activations: spec for Linear inputs, or None for weight-only (W4A16).
        overrides: checked in order; the first match wins.
        skip: fnmatch patterns of modules that stay in full precision (default: heads / classifiers).
        methods: ordered method names run before conversion (e.g. "smoothquant", "gptq"); "rtn" is implicit.
        method_args: per-method keyword arguments.
    """

    name: str
    weights: QuantSpec
    activations: QuantSpec | None = None
    overrides: tuple[Override, ...] = ()
    skip: tuple[str, ...] = DEFAULT_SKIP
    methods: tuple[str, ...] = ()
    method_args: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.weights.dynamic or self.weights.granularity == "token":
            raise SchemeError("weights are quantized once: use granularity tensor|channel|group, not token/dynamic")
        a = self.activations
        if a is not None and a.granularity in ("channel", "group"):
            raise SchemeError(f"activation granularity {a.granularity!r} is not supported: use token (dynamic) "
                              "or tensor (static or dynamic)")
        if a is not None and a.granularity == "token" and not a.dynamic:
            raise SchemeError("per-token activation scales are computed at run time: set dynamic: true")

    def resolve(self, module_name: str) -> tuple[QuantSpec, QuantSpec | None] | str:
        """The (weight spec, activation spec) for a module, or the reason it is skipped."""
        for o in self.overrides:
            if o.matches(module_name):
                if o.skip:
                    return f"skipped by override {o.pattern!r}"
                act = None if o.keep_activations_fp else (o.activations or self.activations)
                return (o.weights or self.weights, act)
        for p in self.skip:
            if fnmatch.fnmatchcase(module_name, p):
                return f"kept in full precision (head/classifier pattern {p!r}; override to quantize it)"
        return (self.weights, self.activations)

    def method_kwargs(self, method: str) -> dict[str, Any]:
        return dict(dict(self.method_args).get(method, ()))

    # --- serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"version": SCHEME_VERSION, "name": self.name, "weights": spec_to_dict(self.weights),
                             "activations": spec_to_dict(self.activations) if self.activations else None}
        if self.overrides:
            d["overrides"] = [_override_dict(o) for o in self.overrides]
        if self.skip != DEFAULT_SKIP:
            d["skip"] = list(self.skip)
        if self.methods:
            d["methods"] = list(self.methods)
        if self.method_args:
            d["method_args"] = {m: dict(kv) for m, kv in self.method_args}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "scheme") -> "Scheme":
        _check_keys(d, {"version", "name", "weights", "activations", "overrides", "skip", "methods",
                        "method_args"}, source)
        version = d.get("version", SCHEME_VERSION)
        if not isinstance(version, int) or version > SCHEME_VERSION:
            raise SchemeError(f"{source}: scheme version {version!r} is newer than this lowbit understands "
                              f"({SCHEME_VERSION}); upgrade lowbit")
        if "weights" not in d:
            raise SchemeError(f"{source}: missing required key 'weights'")
        acts = d.get("activations")
        return cls(
            name=_typed(d.get("name", Path(source).stem), str, "name", source),
            weights=spec_from_dict(d["weights"], f"{source}: weights"),
            activations=None if acts is None else spec_from_dict(acts, f"{source}: activations"),
            overrides=tuple(_override_from(o, f"{source}: overrides[{i}]")
                            for i, o in enumerate(_typed(d.get("overrides", []), list, "overrides", source))),
            skip=tuple(_typed(d.get("skip", list(DEFAULT_SKIP)), list, "skip", source)),
            methods=tuple(_typed(d.get("methods", []), list, "methods", source)),
            method_args=tuple((m, tuple(sorted(kv.items())))
                              for m, kv in _typed(d.get("method_args", {}), dict, "method_args", source).items()),
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, source: str = "scheme.yaml") -> "Scheme":
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SchemeError(f"{source}: not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise SchemeError(f"{source}: expected a mapping at the top level, got {type(d).__name__}")
        return cls.from_dict(d, source)

    def replace(self, **changes: Any) -> "Scheme":
        return dataclasses.replace(self, **changes)


def _check_choice(what: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SchemeError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def _check_keys(d: dict, allowed: set[str], source: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise SchemeError(f"{source}: unknown key(s) {unknown}; allowed keys: {sorted(allowed)}")


def _typed(value: Any, typ: type, key: str, source: str) -> Any:
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise SchemeError(f"{source}: {key!r} must be a {typ.__name__}, got {type(value).__name__} ({value!r})")
    return value


_SPEC_TYPES = {f.name: f.type for f in dataclasses.fields(QuantSpec)}
_PY_TYPES = {"str": str, "bool": bool, "float": (int, float), "int | None": (int, type(None))}


def spec_to_dict(s: QuantSpec) -> dict[str, Any]:
    default = QuantSpec(format=s.format)
    return {k: v for k, v in dataclasses.asdict(s).items() if k == "format" or v != getattr(default, k)}


def spec_from_dict(d: Any, source: str) -> QuantSpec:
    if isinstance(d, str):  # shorthand: just a format name
        d = {"format": d}
    _typed(d, dict, "spec", source)
    _check_keys(d, set(_SPEC_TYPES), source)
    if "format" not in d:
        raise SchemeError(f"{source}: missing required key 'format' (one of {', '.join(sorted(FORMATS))})")
    for k, v in d.items():
        want = _PY_TYPES[_SPEC_TYPES[k]]
        if not isinstance(v, want) or (want is not bool and isinstance(v, bool)):
            raise SchemeError(f"{source}: {k!r} has the wrong type {type(v).__name__} ({v!r}); "
                              f"expected {_SPEC_TYPES[k]}")
    try:
        return QuantSpec(**d)
    except SchemeError as e:
        raise SchemeError(f"{source}: {e}") from None


def _override_dict(o: Override) -> dict[str, Any]:
    d: dict[str, Any] = {"pattern": o.pattern}
    if o.skip:
        d["skip"] = True
    if o.weights:
        d["weights"] = spec_to_dict(o.weights)
    if o.activations:
        d["activations"] = spec_to_dict(o.activations)
    if o.keep_activations_fp:
        d["keep_activations_fp"] = True
    return d


def _override_from(d: Any, source: str) -> Override:
    _typed(d, dict, "override", source)
    _check_keys(d, {"pattern", "skip", "weights", "activations", "keep_activations_fp"}, source)
    if "pattern" not in d:
        raise SchemeError(f"{source}: missing required key 'pattern'")
    return Override(pattern=_typed(d["pattern"], str, "pattern", source),
                    skip=_typed(d.get("skip", False), bool, "skip", source),
                    weights=spec_from_dict(d["weights"], f"{source}.weights") if "weights" in d else None,
                    activations=spec_from_dict(d["activations"], f"{source}.activations") if "activations" in d else None,
                    keep_activations_fp=_typed(d.get("keep_activations_fp", False), bool, "keep_activations_fp",
                                               source))


def _w(fmt: str, g: int | None = None, **kw: Any) -> QuantSpec:
    return QuantSpec(fmt, "group" if g else "channel", g, **kw)


def _a(fmt: str) -> QuantSpec:
    return QuantSpec(fmt, "token", dynamic=True)


PRESETS: dict[str, Scheme] = {s.name: s for s in (
    Scheme("w8a8-int8", _w("int8"), _a("int8")),
    Scheme("w8a8-fp8", _w("fp8_e4m3"), _a("fp8_e4m3")),
    Scheme("w4a16", _w("int4", 128)),
    Scheme("w4a16-fp4", _w("fp4_e2m1", 128)),
    Scheme("w4a8-int", _w("int4", 128), _a("int8")),
    # ZeroQuant-FP (PAPERS.md §4): FP4 weights with M2 scales so FP4 -> FP8 is an exponent shift; FP8 acts.
    Scheme("w4a8-fp", _w("fp4_e2m1", 128, scale_rule="pow2_row"), _a("fp8_e4m3")),
    Scheme("w4a4-int", _w("int4", 128), _a("int4")),
    # one int4 scale per output channel: no per-group float rescale in the GEMM's K loop, so on the encoder
    # engine's held codes it runs the W8A8-INT8 kernel (sm_90, BERT-base FC1 128x128 tile: 160 registers, no
    # spills, vs 255 + 56 B spilled with g128); costs accuracy (`lowbit demo`: MiniLM embedding cosine to FP32
    # 0.7095 vs 0.7350 for w4a4-int)
    Scheme("w4a4-int-channel", _w("int4"), _a("int4")),
    Scheme("w4a4-fp4", _w("fp4_e2m1", 128, scale_rule="pow2_row"), _a("fp4_e2m1")),
)}


def get_scheme(name_or_path: str | Path | Scheme) -> Scheme:
    """A preset by name, or a scheme from a YAML file.

    Raises:
        SchemeError: unknown preset (the message lists the known ones) or an invalid YAML scheme.
    """
    if isinstance(name_or_path, Scheme):
        return name_or_path
    s = str(name_or_path)
    if s in PRESETS:
        return PRESETS[s]
    if s.endswith((".yaml", ".yml")):
        p = Path(s)
        if not p.is_file():
            raise SchemeError(f"scheme file {s} does not exist")
        return Scheme.from_yaml(p.read_text(), source=s)
    raise SchemeError(f"unknown scheme {s!r}; known presets: {', '.join(PRESETS)} (or a path to a .yaml file)")

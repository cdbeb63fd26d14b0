"""Every public function, class and method of the documented API has a docstring worth
reading (the API reference, docs/api/*.md, is built from them), and the ones that take or
give tensors say what shapes.

The rule, checked here:
- walked: the public names of the modules in MODULES (their __all__, else the classes and
  functions they define), and the public methods and properties that each of those classes
  defines itself (vars(cls));
- each has its own docstring of at least MIN_WORDS words; a method that overrides a
  documented method of a base class may leave the docstring to it (Module.forward,
  Optimizer.update, LRScheduler.lr_at, ...: the contract is the base's; the class's own
  docstring says its shapes);
- "deals in tensors" means: a module class (a subclass of nn.Module), a function of
  mininet.nn.functional, or a callable whose signature names Tensor in an annotation (the
  public signatures are annotated); its docstring must state shapes: the word "shape", the
  word "elementwise", or a shape written out with named dims such as (N, C, H, W), (*) or
  (batch, ...);
- a shape with a "*" touching a character is written in backticks, `(*, C)`: the
  reference's Markdown would read two of them as emphasis.

Left out, on purpose:
- dunder methods (__add__, __getitem__, ...): Python's protocols, documented by the class
  and by the method each one calls (Tensor.add, ...);
- private names (a leading underscore) and re-exports under another spelling (Conv2d =
  Conv; mininet.utils.data's names are mininet.data's objects): each object is checked
  once, under the name it was defined with;
- values (dtypes, mininet.accelerator) and modules.
"""
import importlib
import inspect
import re

import pytest

import mininet
from mininet.nn import Module

MODULES = ["mininet", "mininet.nn", "mininet.nn.functional", "mininet.nn.init", "mininet.optim",
           "mininet.optim.lr_scheduler", "mininet.data", "mininet.utils.data",
           "mininet.autograd", "mininet.profiler", "mininet.onnx", "mininet.interop",
           "mininet.interop.save", "mininet.interop.safetensors", "mininet.interop.dlpack",
           "mininet.interop.torch_weights", "mininet.interop.pt_reader", "mininet.training",
           "mininet.models"]
MIN_WORDS = 5
# a shape written out: (*), (N, C, H, W), (batch, seq, ...), (N, *), (in_features, out_features)
_DIM = r"(?:\*|\.\.\.|[A-Za-z_][\w']*|\d+)"
SHAPE = re.compile(rf"shape|elementwise|\(\*\)|\({_DIM},\)|\({_DIM}(?:, ?{_DIM}(?: ?[-+*/] ?{_DIM})?)+\)")


def _public_names(modname):
    module = importlib.import_module(modname)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
                 and (getattr(obj, "__module__", "") or "").startswith(modname)]
    return [(f"{modname}.{n}", getattr(module, n)) for n in names]


def _unwrap(member):
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    return member


def _walk():
    """(qualified name, object, owner class or None, attribute name) for everything checked."""
    seen, out = set(), []
    for modname in MODULES:
        for qual, obj in _public_names(modname):
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue
            own = getattr(obj, "__name__", None)
            if qual.rsplit(".", 1)[1] != own and not modname.startswith("mininet.interop."):
                # an alias (Conv2d = Conv): checked under its own name if that is exported
                module = importlib.import_module(modname)
                if getattr(module, own or "", None) is obj:
                    continue
            seen.add(id(obj))
            out.append((qual, obj, None, own))
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    member = _unwrap(member)
                    if attr.startswith("_") or not inspect.isfunction(member):
                        continue
                    out.append((f"{qual}.{attr}", member, obj, attr))
    return out


ITEMS = _walk()


def _doc(obj, owner, attr):
    """The docstring that documents obj: its own, else (a method override) a base's."""
    own = obj.__doc__ if (inspect.isclass(obj) and "__doc__" in vars(obj)) or not inspect.isclass(obj) \
        else None
    if own or owner is None:
        return own
    for base in owner.__mro__[1:]:
        if attr in vars(base):
            doc = getattr(_unwrap(vars(base)[attr]), "__doc__", None)
            if doc:
                return doc
    return None


def _names_tensor(obj):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    notes = [p.annotation for p in sig.parameters.values()] + [sig.return_annotation]
    return any("Tensor" in (a if isinstance(a, str) else repr(a)) for a in notes
               if a is not inspect.Parameter.empty)


def _deals_in_tensors(qual, obj, owner):
    if inspect.isclass(obj):
        return issubclass(obj, Module) and obj is not Module
    if owner is None and qual.startswith("mininet.nn.functional."):
        return True
    return _names_tensor(obj)


def test_the_walk_covers_the_api():
    names = {q for q, *_ in ITEMS}
    for expected in ["mininet.tensor", "mininet.nn.Linear", "mininet.nn.functional.cross_entropy",
                     "mininet.Tensor.reshape", "mininet.data.DataLoader",
                     "mininet.optim.Optimizer.step", "mininet.optim.StepLR",
                     "mininet.profiler.profile", "mininet.onnx.export", "mininet.training.fit",
                     "mininet.save", "mininet.nn.init.kaiming_uniform_"]:
        assert expected in names, expected
    assert len(ITEMS) > 400


def _missing_docs():
    bad = []
    for qual, obj, owner, attr in ITEMS:
        doc = _doc(obj, owner, attr)
        if not doc or len(doc.split()) < MIN_WORDS:
            bad.append(qual)
    return bad


def _missing_shapes():
    bad = []
    for qual, obj, owner, attr in ITEMS:
        doc = _doc(obj, owner, attr) or ""
        if _deals_in_tensors(qual, obj, owner) and not SHAPE.search(doc):
            bad.append(qual)
    return bad


def test_every_public_name_has_a_docstring():
    bad = _missing_docs()
    assert not bad, f"{len(bad)} public names without a docstring of {MIN_WORDS}+ words:\n" + \
        "\n".join(bad)


def test_docstrings_of_tensor_functions_state_shapes():
    bad = _missing_shapes()
    assert not bad, f"{len(bad)} docstrings that take or give tensors but say no shape:\n" + \
        "\n".join(bad)


@pytest.mark.parametrize("text, ok", [("(N, C, H, W)", True), ("(*)", True), ("same shape", True),
                                      ("(batch, seq, embed)", True), ("returns a float", False),
                                      ("elementwise", True),
                                      ("(default)", False), ("(N,)", True), ("(N, H + 2)", True)])
def test_the_shape_rule(text, ok):
    assert bool(SHAPE.search(text)) is ok


# a shape holding a "*" that touches a character, outside backticks: the API reference's
# Markdown reads two of them as emphasis, (*, in) ... (*, out) rendering as
# "(<em>, in) ... (</em>, out)" (a "*" between spaces, C * H, is no emphasis)
BARE_STAR_SHAPE = re.compile(r"(?<![`\w])\([^()`\n]*\*[^()`\n]*\)(?!`)")


def _bare_star_shape(text):
    return any(re.search(r"\S\*|\*\S", m.group(0)) for m in BARE_STAR_SHAPE.finditer(text))


def test_shapes_with_stars_are_written_as_code():
    bad = [qual for qual, obj, owner, attr in ITEMS if _bare_star_shape(_doc(obj, owner, attr) or "")]
    assert not bad, "write these shapes in backticks, `(*, C)`:\n" + "\n".join(bad)


def test_tensor_annotations_resolve():
    # the public signatures name Tensor; mkdocstrings and this test read them as written
    sig = inspect.signature(mininet.nn.functional.linear)
    assert "Tensor" in str(sig)

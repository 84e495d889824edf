"""The commands that need no model of the user's: ``demo``, ``data`` and ``reproduce``. Each ``*_command(args)``
returns the exit code; heavy modules load inside, so ``sigmadelta --help`` stays fast."""

from __future__ import annotations

from ..errors import UsageError
from ..paper import EXPERIMENTS  # the names only: the experiments load on demand

__all__ = ["demo_command", "data_command", "reproduce_command"]


def demo_command(args) -> int:
    import torch

    import sigmadelta

    from .._utils.files import write_json
    from ..eval.report import compare_networks, format_layer_table

    if args.synthetic:
        from ..testing import correlated_stream, mlp

        torch.manual_seed(args.seed)
        model, labels, facts = mlp((784, 200, 200, 10)), None, {"model": "random 784-200-200-10 MLP"}
        clip = correlated_stream(args.frames, (784,), step_std=0.02, generator=torch.Generator().manual_seed(args.seed))
        what = (f"a randomly initialised 784-200-200-10 MLP on a synthetic, temporally correlated stream "
                f"({args.frames} steps), all scales k = 16")
        net = sigmadelta.convert(model, torch.zeros(1, 784))
        net.set_scales({name: 16.0 for name in net.scales})
    else:
        from .. import data, models, recipes
        from .setup import learn_mnist_scales

        bundle = models.get("mnist-mlp")
        model, facts = bundle.model, {"model": bundle.name, "model_info": bundle.info}
        net = sigmadelta.convert(model, torch.zeros(1, 784))
        lam = recipes.scale_lam("mnist-mlp") if args.lam is None else args.lam
        facts["lam"] = lam
        learn_mnist_scales(net, recipes.DEMO_MLP.replace(lam=lam), args.calibrate)
        clip, labels = data.mnist_clip("test", temporal=True, max_frames=args.frames)
        labels = labels.unsqueeze(1)
        what = (f"the pre-trained 784-200-200-10 MNIST MLP on Temporal-MNIST test ({len(clip):,} frames, one stream), "
                f"scales learned with λ = {lam:g}: " + ", ".join(f"{k:.3g}" for k in net.scales.values()))
    print(f"\nsigmadelta demo: {what}\n")
    result = compare_networks(net, clip, labels) | facts | {"description": what, "command": "sigmadelta demo " + " ".join(
        a for a in (f"--frames {args.frames}", f"--calibrate {args.calibrate}", f"--lam {args.lam:g}" if args.lam else "")
        if a) if not args.synthetic else f"sigmadelta demo --synthetic --frames {args.frames} --seed {args.seed}"}
    print(format_layer_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


def data_command(args) -> int:
    from .. import data, models
    from .._utils.files import write_json

    if args.action == "fetch":
        if args.json:
            raise UsageError("--json lists what `sigmadelta data` knows; `data fetch` writes the clips")
        for name, path in data.fetch_clips(args.names or None).items():
            print(f"{name}: {path}")
        return 0
    if args.names:
        raise UsageError(f"names ({', '.join(args.names)}) are for `sigmadelta data fetch`")
    entries = data.catalog() + models.catalog()
    if args.json:
        write_json(args.json, entries)
    width = max(len(e["name"]) for e in entries)
    for e in entries:
        mark = "yes" if e["present"] else "no "
        print(f"{e['kind']:<8} {e['name']:<{width}}  present: {mark}  {e['description']}  [{e['source']}]")
    return 0


def reproduce_command(args) -> int:
    import importlib

    module, _ = EXPERIMENTS[args.experiment]
    if args.model is not None and args.experiment != "video":
        raise UsageError(f"--model applies to `reproduce video` only, not {args.experiment!r}")
    experiment = importlib.import_module(f"sigmadelta.paper.{module}")
    argv = (["--out", str(args.out)] if args.out else []) + (["--quick"] if args.quick else [])
    experiment.main(argv + (["--model", args.model] if args.model is not None else []))
    return 0

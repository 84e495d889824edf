"""How much input error the original model's answers survive on each clip: the ceiling of every lossy scheme.

    python -m sigmadelta.paper.input_sensitivity MODEL [--levels E ...] [--frames N]

A delta scheme with memory leaves each unit up to its band away from its true value. Whatever it does deeper in the
network, it can agree with the original no better than the original agrees with itself under an input error of
that size. For each test clip (jwpIntro, testMovie, cityCC0, bikes, bigbuckbunny) and the training clip carphone,
this measures, with the original model in dense PyTorch:

- the top-1 margin, softmax probability of the top class minus the runner-up's, per frame (quantiles, and the
  frames with margin under 0.05);
- the top-1 / top-5 agreement with the unperturbed answers when every input value gets independent uniform noise
  of ±E grey levels (one grey level = one step of the 8-bit frame through the model's preprocessing), fresh
  noise per frame, seeded;
- how often the answer to frame t is the answer to frame t − 1 (top-1 equal, and frame t's top-1 within frame
  t − 1's top-5): what a network that lags one frame behind would agree;
- the original's mean top-1 probability and how many classes it answers.

The evaluation's decisive frames (:func:`sigmadelta.eval.decisive.decisive_frames`) are this at ±2 grey levels, three
draws, per frame.

Writes ``results/sensitivity/<model>.json``.
"""

import argparse
import json

import numpy as np
import torch

from sigmadelta import data, models
from sigmadelta.eval.metrics import agreement as agreement_of
from sigmadelta.eval.decisive import grey_level
from sigmadelta.paper._common import TEST_CLIPS, TRAIN_CLIP, write_result

CLIPS = (*TEST_CLIPS, TRAIN_CLIP)


def agreement(logits: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Top-1 / top-5 agreement of ``logits`` with ``reference`` (:func:`sigmadelta.eval.metrics.agreement`), as
    fractions of the frames."""
    top1, top5 = agreement_of(logits, reference)
    return float(top1.double().mean()), float(top5.double().mean())


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--levels", type=float, nargs="+", default=(0.5, 1.0, 2.0, 3.0, 5.0, 10.0))
    p.add_argument("--frames", type=int, default=None, help="the first frames of each clip (default: all)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    bundle = models.get(args.model, progress=False)
    model = bundle.model.eval()
    unit = grey_level(bundle)
    generator = torch.Generator().manual_seed(0)
    out = dict(model=args.model, frames=args.frames, grey_level=unit.flatten().tolist(), clips={})
    with torch.inference_mode():
        for clip in CLIPS:
            frames = data.load_clip(clip, bundle, max_frames=args.frames)[:, 0]
            reference = torch.cat([model(frames[i:i + 8]) for i in range(0, len(frames), 8)])
            probs = reference.softmax(-1).topk(2, dim=-1).values
            margin = (probs[:, 0] - probs[:, 1]).numpy()
            row = dict(frames=len(frames), top1_probability=float(probs[:, 0].mean()),
                       classes=len(set(reference.argmax(-1).tolist())),
                       margin_quantiles={f"{q:g}": float(np.quantile(margin, q)) for q in (0.1, 0.25, 0.5, 0.75)},
                       frames_margin_under_0_05=int((margin < 0.05).sum()), noise={})
            top1, top5 = agreement(reference[1:], reference[:-1])  # frame t's answer against frame t - 1's
            row["previous_frame"] = dict(top1=top1, top5=top5)
            for level in args.levels:
                noisy = []
                for i in range(0, len(frames), 8):
                    x = frames[i:i + 8]
                    noise = (torch.rand(x.shape, generator=generator) * 2 - 1) * level * unit
                    noisy.append(model(x + noise))
                top1, top5 = agreement(torch.cat(noisy), reference)
                row["noise"][f"{level:g}"] = dict(top1=top1, top5=top5)
            out["clips"][clip] = row
            print(clip, json.dumps(row), flush=True)
    write_result(f"sensitivity/{args.model}.json", out)


if __name__ == "__main__":
    main()

"""The ``torchdnc`` command."""

from __future__ import annotations

import argparse
import sys

import torchdnc
from torchdnc.dnc import DNC, DNCConfig


def _info(args: argparse.Namespace) -> int:
    import torch

    config = DNCConfig()
    model = DNC(config)
    print(f"torchdnc {torchdnc.__version__} (torch {torch.__version__})")
    print("default DNCConfig:")
    print(config.to_json())
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Run an untrained DNC over a toy sequence and print what its memory did."""
    import torch

    torch.manual_seed(args.seed)
    model = DNC(input_size=4, output_size=4, memory_size=8, word_size=8, num_reads=2)
    x = torch.randn(1, args.steps, 4)
    with torch.no_grad():
        _, _, trace = model(x, return_trace=True)
    print(f"untrained DNC, N=8 slots, {args.steps} steps; per step: the slot written most,")
    print("the write gate, the most used slot's usage and read head 0's strongest slot")
    print(f"{'t':>3} {'write->slot':>11} {'gate':>6} {'max usage':>9} {'read0<-slot':>11}")
    for t in range(args.steps):
        ww = trace.write_weights[0, t, 0]
        print(f"{t:3d} {int(ww.argmax()):11d} {float(trace.write_gates[0, t, 0]):6.3f} "
              f"{float(trace.usage[0, t].max()):9.3f} {int(trace.read_weights[0, t, 0].argmax()):11d}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchdnc", description="Differentiable Neural Computer: train, evaluate, plot."
    )
    parser.add_argument("--version", action="version", version=f"torchdnc {torchdnc.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = commands.add_parser("info", help="print the version and the default configuration")
    info.set_defaults(run=_info)
    demo = commands.add_parser("demo", help="run an untrained DNC and print what its memory did")
    demo.add_argument("--steps", type=int, default=10, help="sequence length (default 10)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

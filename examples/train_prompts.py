"""Train TransTIC prompts for a machine task with the library (not the CLI).

Examples::

    # ImageNet classification prompts on the released base codec of quality 1
    python examples/train_prompts.py --task cls --quality 1 \
        --dataset /data/imagenet/train --val-dataset /data/imagenet/val --output runs/cls-q1

    # your own task plugin and images, on your own base codec, 2 GPUs
    torchrun --nproc_per_node 2 examples/train_prompts.py --task mytask \
        --dataset /data/my-images --base my_tic.pth.tar --lmbda 0.5 --output runs/mytask

    # a quick check on a few images, offline: random recognition network, your base codec
    python examples/train_prompts.py --task cls --dataset /tmp/images --base my_tic.pth.tar \
        --task-weights random --batch-size 2 --epochs 1 --output /tmp/try

Every other setting (crops, learning-rate schedule ...) takes the task's defaults, i.e.
the paper's; ``compressai-transtic train --help`` lists them all. The options here are
TrainConfig's fields, which the library's error messages name (``batch_size``: this
script's ``--batch-size``). Invalid input is reported in one line, exit status 2.
"""

import argparse
import sys

from compressai_transtic.training import USER_ERRORS, TrainConfig, train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="cls, det, seg or a registered task plugin")
    parser.add_argument("--dataset", required=True, help="folder of training images")
    parser.add_argument("--val-dataset", help="folder of validation images (best-adapter selection)")
    parser.add_argument("--quality", type=int, default=1, help="1..4")
    parser.add_argument("--lmbda", type=float, help="trade-off (default: the paper's for the quality)")
    parser.add_argument("--base", help="base codec checkpoint (default: released base_codec_<quality>)")
    parser.add_argument("--task-weights", default="default", help="recognition network: default, a file, or random")
    parser.add_argument("--batch-size", type=int, help="images per step (default: the task's)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the task's)")
    parser.add_argument("--output", help="output directory (default runs/<task>-q<quality>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output if there is one")
    args = parser.parse_args()

    try:
        config = TrainConfig(
            task=args.task,
            dataset=args.dataset,
            val_dataset=args.val_dataset,
            quality=args.quality,
            lmbda=args.lmbda,
            base=args.base,
            task_weights=args.task_weights,
            batch_size=args.batch_size,
            epochs=args.epochs,
            output=args.output,
            resume="auto" if args.resume else None,
        )
        result = train(config)
    except USER_ERRORS as exc:  # invalid input: settings, images, checkpoints, missing weights
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"final adapter: {result.final_adapter}")
    print(f"full model:    {result.final_model}")
    if result.best_adapter is not None:
        print(
            f"best adapter:  {result.best_adapter} (epoch {result.best_epoch}, validation loss {result.best_value:.5g})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line in a checkout; the same as `sde-gen` (`sde_gen.launch`) once installed:

    python launch.py --config=configs/vp_cifar.py --mode=train --workdir=runs/vp_cifar
    python launch.py --config=configs/vp_cifar.py --mode=eval --workdir=runs/vp_cifar

Any config value can be overridden on the command line, e.g.
`--config.training.n_iters=500 --config.training.batch_size=64`; `sde-gen --helpshort`
lists the flags.
"""

from sde_gen.launch import main

if __name__ == "__main__":
    main()

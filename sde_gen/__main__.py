"""`python -m sde_gen --config=... --workdir=... --mode=...`: the `sde-gen` command line."""

from sde_gen.launch import main

if __name__ == "__main__":
    main()

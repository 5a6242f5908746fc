"""`python -m aiecs_checkpoint`: the `aiecs-checkpoint` command line."""

from aiecs_checkpoint.cli import main

if __name__ == "__main__":
    main()

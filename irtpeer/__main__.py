from .cli import program

program()  # main, then exit without the interpreter's teardown (~0.1 s), as the console script

from lungheart_cl.cli import main

main()

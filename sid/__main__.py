from sid.cli import main

main()

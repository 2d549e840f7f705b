from wsolctl.cli import main

main()

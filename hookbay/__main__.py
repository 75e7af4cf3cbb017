from hookbay.cli.app import main

main()

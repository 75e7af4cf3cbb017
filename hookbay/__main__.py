from hookbay.cli.main import main

main()

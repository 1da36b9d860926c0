from featurestore.cli.main import main

main()

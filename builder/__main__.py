from .cli import main

if __name__ == "__main__":  # `build --target` spawns workers, which import this module again
    main()

"""The book's scripts; ``scripts.book_config`` holds the facts that scripts, benchmarks and tests
share."""

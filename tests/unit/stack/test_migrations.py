from store.migrate import available_migrations


def test_migrations_are_numbered_in_order_without_gaps() -> None:
    versions = [migration.version for migration in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_every_migration_has_statements() -> None:
    for migration in available_migrations():
        statements = migration.statements()
        assert statements, migration.path
        assert all(not s.rstrip().endswith(";") for s in statements)

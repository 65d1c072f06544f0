"""tests/deploy: the static chart checks run in the default suite; the container suite (marker ``deploy``:
Docker engine, images, podman) runs only when selected (`make test-deploy` = ``pytest -m deploy tests/deploy``)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "deploy: container suite (Docker engine, images, podman); make test-deploy")


def pytest_collection_modifyitems(config, items):
    if "deploy" in (config.option.markexpr or ""):
        return
    keep = [i for i in items if i.get_closest_marker("deploy") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("deploy")])
        items[:] = keep

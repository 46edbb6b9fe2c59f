"""Group paths as path lookup reads them, and pid 0 in cgroup.procs / tasks, on both backends.

The real kernel's answers (cgroup v1 on Linux 6.18, under the caller's memory cgroup):
mkdir of "a/." or "a/.." EEXIST; rmdir of "a/." EINVAL, of "a/b/.." ENOTEMPTY; repeated
and trailing slashes ignored; a 256-byte name is created (kernfs has no NAME_MAX), a path
of PATH_MAX (4096) bytes is ENAMETOOLONG; a NUL never reaches the kernel (Python:
ValueError "embedded null byte").
"""

import errno

import pytest

import memcg


def sim(hierarchy):
    k = memcg.SimKernel(memory="256M", cpus=2, swap="0", hierarchy=hierarchy)
    return k


@pytest.fixture(params=["sim-v1", "sim-v2", "linux"])
def kern(request):
    if request.param == "linux":
        request.getfixturevalue("real_memcg")
        kernel = memcg.LinuxKernel()
    else:
        kernel = sim(request.param[4:])
    yield kernel
    kernel.close()


def err(fn, *args):
    with pytest.raises(OSError) as info:
        fn(*args)
    return errno.errorcode[info.value.errno]


def test_nul_in_a_path_is_one_valueerror_everywhere(kern):
    kern.mkdir("/a")
    for call in (lambda: kern.mkdir("/a\0b"), lambda: kern.rmdir("/a\0"),
                 lambda: kern.read("/a\0/memory.stat"), lambda: kern.write("/a/cgroup.procs\0", "1"),
                 lambda: kern.listdir("/a\0"), lambda: kern.spawn("/a\0b")):
        with pytest.raises(ValueError, match="expected a group path"):
            call()
    assert "a\0b" not in kern.listdir("/")


def test_dot_and_dotdot_components(kern):
    kern.mkdir("/a")
    kern.mkdir("/a/b")
    assert err(kern.mkdir, "/a/.") == "EEXIST"
    assert err(kern.mkdir, "/a/b/..") == "EEXIST"
    assert err(kern.mkdir, "/x/.") == "ENOENT"
    assert err(kern.rmdir, "/a/.") == "EINVAL"
    assert err(kern.rmdir, "/a/b/..") == "ENOTEMPTY"
    assert err(kern.rmdir, "/") == "EBUSY"
    assert kern.listdir("/a").count("b") == 1  # nothing was removed
    kern.mkdir("/a/./b/../c")
    assert "c" in kern.listdir("/a")
    assert kern.read("/a/b/../c/cgroup.procs") == ""
    with pytest.raises(PermissionError):
        kern.mkdir("/../x")
    with pytest.raises(PermissionError):
        kern.rmdir("/a/../..")


def test_slashes_and_long_names(kern):
    kern.mkdir("//a//")
    kern.mkdir("/a/b/")
    assert "b" in kern.listdir("/a/")
    long = "x" * 256  # longer than NAME_MAX: cgroupfs takes it
    kern.mkdir("/" + long)
    assert long in kern.listdir("/")
    kern.rmdir("/" + long + "/")
    assert err(kern.mkdir, "/" + "y" * 4096) == "ENAMETOOLONG"
    kern.rmdir("/a/b//")


def test_pid_0_is_refused_on_every_backend(kern):
    """The kernel moves the writer (pid 0 = current); the writer of k.write() is no task
    of the kernel object: EPERM, and nothing moves."""
    kern.mkdir("/a")
    if kern.backend == "sim" and kern.sys.cgroup_dfl:
        files = ["cgroup.procs"]
    else:
        files = ["cgroup.procs", "tasks"]
    for name in files:
        for text in ("0", " 0\n", "+0", "0x0", "00"):
            with pytest.raises(PermissionError) as info:
                kern.write(f"/a/{name}", text)
            assert info.value.errno == errno.EPERM
        assert kern.read(f"/a/{name}") == ""
    t = kern.spawn("/")
    kern.write("/a/cgroup.procs", str(t.pid))
    assert kern.read("/a/cgroup.procs").split() == [str(t.pid)]


@pytest.mark.parametrize("path, expected", [
    ("/a\\u0000b", "without NUL bytes"),
    ("/a/./b", 'a group path like "/a/b"'),
    ("/a/../b", 'a group path like "/a/b"'),
    ("/" + "x" * 4096, "shorter than 4096 bytes"),
])
def test_scenario_loader_names_the_key(path, expected):
    from memcg.scenario import ScenarioError, parse_scenario
    with pytest.raises(ScenarioError) as info:
        parse_scenario(f'[[group]]\npath = "{path}"\n', "test.toml")
    msg = str(info.value)
    assert "path" in msg and expected in msg and "\n" not in msg

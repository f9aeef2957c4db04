#!/usr/bin/python3
# Cellar's small fscrypt tool: the ioctls of the kernel's native file encryption (ext4's
# "encrypt" feature, policy v2), which Node cannot call. Driven by src/runtime/fscrypt.ts.
#
#   fscrypt.py status DIR   what DIR is: on a filesystem without encryption, plain, or
#                           encrypted (its policy read back, and whether its key is present)
#   fscrypt.py unlock DIR   adds the 64-byte key read from stdin to DIR's filesystem; an empty
#                           plain DIR gets a v2 policy under that key (AES-256-XTS contents,
#                           AES-256-CTS names); an encrypted DIR must be under that key
#   fscrypt.py lock DIR     removes the key of DIR's policy from its filesystem
#
# Each prints one JSON object on stdout. The key only ever comes on stdin: never in argv,
# the environment or a file. Structures: include/uapi/linux/fscrypt.h.
import contextlib
import errno
import fcntl
import json
import os
import struct
import sys

POLICY_V2 = 2
MODE_AES_256_XTS = 1
MODE_AES_256_CTS = 4
FLAGS_PAD_32 = 0x03
KEY_SPEC_TYPE_IDENTIFIER = 2
KEY_SIZE = 64
MODES = {1: "AES-256-XTS", 4: "AES-256-CTS", 5: "AES-128-CBC", 6: "AES-128-CTS", 9: "Adiantum"}
KEY_STATUS = {1: "absent", 2: "present", 3: "incompletely-removed"}


def ioc(direction, number, size):
    # _IOC(dir, 'f', nr, size): dir 1 = write, 2 = read, 3 = both (asm-generic/ioctl.h)
    return (direction << 30) | (size << 16) | (ord("f") << 8) | number


SET_POLICY = ioc(2, 19, 12)  # _IOR('f', 19, struct fscrypt_policy_v1)
GET_POLICY_EX = ioc(3, 22, 9)  # _IOWR('f', 22, __u8[9])
ADD_KEY = ioc(3, 23, 80)  # _IOWR('f', 23, struct fscrypt_add_key_arg)
REMOVE_KEY = ioc(3, 24, 64)  # _IOWR('f', 24, struct fscrypt_remove_key_arg)
KEY_STATUS_IOC = ioc(3, 26, 128)  # _IOWR('f', 26, struct fscrypt_get_key_status_arg)

# struct fscrypt_policy_v2: version, contents mode, filenames mode, flags, 4 reserved, identifier[16]
POLICY_V2_FMT = "=BBBB4x16s"
# struct fscrypt_key_specifier: type, reserved, union of 32 bytes (identifier in its first 16)
KEY_SPEC_FMT = "=II32s"


def key_spec(identifier):
    return struct.pack(KEY_SPEC_FMT, KEY_SPEC_TYPE_IDENTIFIER, 0, identifier)


class Unsupported(Exception):
    pass


def read_policy(fd):
    """The directory's v2 policy as a dict; None when it has none; Unsupported without fscrypt."""
    # struct fscrypt_get_policy_ex_arg: policy_size (in: room, out: size), then the policy.
    arg = bytearray(struct.pack("=Q", 24) + bytes(24))
    try:
        fcntl.ioctl(fd, GET_POLICY_EX, arg)
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
            raise Unsupported() from e
        raise
    (size,) = struct.unpack_from("=Q", arg, 0)
    if arg[8] != POLICY_V2 or size < 24:
        return {"version": arg[8]}
    version, contents, filenames, flags, identifier = struct.unpack_from(POLICY_V2_FMT, arg, 8)
    return {
        "version": version,
        "contents": MODES.get(contents, str(contents)),
        "filenames": MODES.get(filenames, str(filenames)),
        "flags": flags,
        "identifier": identifier,
    }


@contextlib.contextmanager
def opened(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def fs_of(path):
    """The directory above `path`, for the key ioctls: an fd on the encrypted directory itself
    would keep it in use, and its key could then not be removed completely."""
    return opened(os.path.dirname(os.path.abspath(path)))


def key_status_of(path, identifier):
    arg = bytearray(key_spec(identifier) + bytes(128 - 40))
    with fs_of(path) as fd:
        fcntl.ioctl(fd, KEY_STATUS_IOC, arg)
    (status,) = struct.unpack_from("=I", arg, 40 + 24)
    return KEY_STATUS.get(status, str(status))


def add_key(path, key):
    """Adds the raw key to the filesystem's keyring; returns its identifier (kernel-derived)."""
    # struct fscrypt_add_key_arg: key_spec, raw_size, key_id, 7 reserved, flags, raw[]
    arg = bytearray(key_spec(bytes(16)) + struct.pack("=II28xI", len(key), 0, 0) + key)
    with fs_of(path) as fd:
        fcntl.ioctl(fd, ADD_KEY, arg)
    return bytes(arg[8:24])


def remove_key(path, identifier):
    """Removes the key; returns the kernel's removal flags (1: files of it still open)."""
    # struct fscrypt_remove_key_arg: key_spec, removal_status_flags, 5 reserved
    arg = bytearray(key_spec(identifier) + bytes(24))
    with fs_of(path) as fd:
        fcntl.ioctl(fd, REMOVE_KEY, arg)
    (flags,) = struct.unpack_from("=I", arg, 40)
    return flags


def describe(path):
    with opened(path) as fd:
        try:
            policy = read_policy(fd)
        except Unsupported:
            return {"state": "unsupported", "detail": f"the filesystem of {path} has no ext4 encryption feature"}
    if policy is None:
        return {"state": "plain", "detail": f"{path} has no encryption policy"}
    if policy["version"] != POLICY_V2:
        return {"state": "plain", "detail": f"{path} has a version {policy['version']} policy, not 2"}
    return {
        "state": "encrypted",
        "contents": policy["contents"],
        "filenames": policy["filenames"],
        "identifier": policy["identifier"].hex(),
        "key": key_status_of(path, policy["identifier"]),
    }


def read_key():
    key = sys.stdin.buffer.read(KEY_SIZE + 1)
    if len(key) != KEY_SIZE:
        raise SystemExit(f"fscrypt.py: expected a {KEY_SIZE}-byte key on stdin, got {len(key)} bytes")
    return key


def unlock(path):
    found = describe(path)
    if found["state"] == "unsupported":
        return found
    identifier = add_key(path, read_key())
    if found["state"] == "plain":
        if os.listdir(path):
            found["detail"] = f"{path} already holds files written without encryption"
            return found
        policy = struct.pack(POLICY_V2_FMT, POLICY_V2, MODE_AES_256_XTS, MODE_AES_256_CTS, FLAGS_PAD_32, identifier)
        with opened(path) as fd:
            fcntl.ioctl(fd, SET_POLICY, policy)
    elif found["identifier"] != identifier.hex():
        remove_key(path, identifier)
        raise SystemExit(f"fscrypt.py: {path} is encrypted under another key ({found['identifier']})")
    return describe(path)


def lock(path):
    found = describe(path)
    if found["state"] != "encrypted" or found["key"] == "absent":
        return found
    flags = remove_key(path, bytes.fromhex(found["identifier"]))
    found = describe(path)
    # Files still open keep their key until closed: the kernel says so rather than failing.
    if flags & 1:
        found["detail"] = f"files of {path} are still open: their key goes when they are closed"
    return found


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("status", "unlock", "lock"):
        raise SystemExit("usage: fscrypt.py status|unlock|lock DIR")
    command, path = sys.argv[1], sys.argv[2]
    print(json.dumps({"status": describe, "unlock": unlock, "lock": lock}[command](path)))


if __name__ == "__main__":
    try:
        main()
    except OSError as e:
        raise SystemExit(f"fscrypt.py: {sys.argv[1]} {sys.argv[2]}: {os.strerror(e.errno)}")

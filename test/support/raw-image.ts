// Reads a volume's image file as raw bytes, the way someone holding the disk would, and says
// whether a text is in it. Only the image's data extents are read (SEEK_DATA/SEEK_HOLE, which
// Node lacks, hence python3): a Dedicated node's 80 GB image is sparse, mostly holes.
import { execFile } from "node:child_process";

const SCAN = `
import os, sys
path, needle = sys.argv[1], sys.argv[2].encode()
fd = os.open(path, os.O_RDONLY)
end = os.fstat(fd).st_size
pos, chunk, found = 0, 8 << 20, False
while pos < end and not found:
    try:
        pos = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, pos, os.SEEK_HOLE)
    tail = b""
    while pos < hole and not found:
        data = os.pread(fd, min(chunk, hole - pos), pos)
        found = needle in tail + data
        tail = data[-len(needle):]
        pos += len(data)
print("found" if found else "absent")
`;

/** Whether the raw bytes of `image` hold `text`. */
export function imageHolds(image: string, text: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    execFile("python3", ["-c", SCAN, image, text], { timeout: 120_000 }, (err, stdout) => {
      if (err) reject(new Error(`scanning ${image} failed: ${err.message}`));
      else resolve(String(stdout).trim() === "found");
    });
  });
}

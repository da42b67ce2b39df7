"""The nftables edge: the Node's scripts for the instances' own tables run through `nft -f -`.

Only tables named vrrpd_* are ever made, changed or deleted (`vrrpd.core.accept` writes the scripts); every
other table of the host stays as it is. A script that fails is an OSError with nft's own words.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

from vrrpd.core.accept import TABLE_PREFIX, removal

NFT_TIMEOUT_S = 10.0


def nft_problem() -> str | None:
    """Why nftables cannot be used here (no nft program, or no nf_tables in the kernel), or None."""
    nft = shutil.which("nft")
    if nft is None:
        return "nft (the nftables package) is not installed"
    try:
        proc = subprocess.run([nft, "list", "tables"], capture_output=True, text=True, timeout=NFT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nft cannot run: {exc}"
    if proc.returncode != 0:
        return f"nft cannot list tables (no nf_tables in this kernel, or no CAP_NET_ADMIN): {proc.stderr.strip()}"
    return None


async def run_script(script: str) -> str:
    """Run one nft script as one transaction; its output, or OSError with what nft said."""
    proc = await asyncio.create_subprocess_exec(
        "nft", "-f", "-", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(script.encode()), NFT_TIMEOUT_S)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise OSError(f"nft did not finish within {NFT_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        raise OSError(f"nft failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def our_tables() -> list[str]:
    proc = await asyncio.create_subprocess_exec("nft", "-j", "list", "tables", stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), NFT_TIMEOUT_S)
    if proc.returncode != 0:
        raise OSError(f"nft list tables failed: {err.decode(errors='replace').strip()}")
    items = json.loads(out or b"{}").get("nftables", [])
    return [t["table"]["name"] for t in items if "table" in t and t["table"].get("family") == "inet"
            and t["table"].get("name", "").startswith(TABLE_PREFIX)]


async def prune(keep: tuple[str, ...]) -> list[str]:
    """Delete our tables (vrrpd_*) that no instance wants now; the names deleted (none without nft at all)."""
    if shutil.which("nft") is None:
        return []
    stale = [name for name in await our_tables() if name not in keep]
    if stale:
        await run_script("".join(removal(name) for name in stale))
    return stale

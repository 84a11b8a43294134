//! What a test needs to know of an executable's ELF header: whether it asks
//! for a dynamic loader, and whether it is position-dependent.

/// A 64-bit little-endian ELF's header, or None for anything else.
fn header(elf: &[u8]) -> Option<&[u8]> {
    (elf.len() >= 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2 && elf[5] == 1).then(|| &elf[..64])
}

fn u16_at(bytes: &[u8], off: usize) -> usize {
    u16::from_le_bytes([bytes[off], bytes[off + 1]]).into()
}

/// True if a 64-bit little-endian ELF has a PT_INTERP program header, i.e.
/// needs a dynamic loader. Other formats are not judged.
pub fn needs_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let Some(header) = header(elf) else { return false };
    let phoff = u64::from_le_bytes(header[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(header, 0x36), u16_at(header, 0x38));
    (0..phnum).any(|i| {
        let off = phoff.saturating_add(i * phentsize);
        elf.get(off..off + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) == PT_INTERP)
    })
}

/// True for a 64-bit little-endian ELF executable linked at a fixed address
/// (`ET_EXEC`); a position-independent one is `ET_DYN`, as shared objects are.
pub fn is_position_dependent(elf: &[u8]) -> bool {
    const ET_EXEC: usize = 2;
    header(elf).is_some_and(|h| u16_at(h, 0x10) == ET_EXEC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn busybox_static_is_static_and_ls_is_dynamic_and_position_independent() {
        let busybox = fs::read(crate::image::DEFAULT_BUSYBOX).unwrap();
        let ls = fs::read("/bin/ls").unwrap();
        assert!(!needs_interpreter(&busybox) && is_position_dependent(&busybox));
        assert!(needs_interpreter(&ls));
        assert!(!is_position_dependent(&ls), "Debian builds its binaries as PIE");
    }

    #[test]
    fn other_formats_are_neither() {
        assert!(!needs_interpreter(b"#!/bin/sh\n"));
        assert!(!is_position_dependent(&[0u8; 64]));
    }
}

"""Files the command line reads and writes: output paths checked before any model work, atomic audio
writes, transcripts and batch manifests read with messages that name the file and line."""

"""The training demos behind `seqops train`: a character-level Linformer LM and Compressive
Transformer LM (``linformer.train``, ``compressive.train``) on what ``common`` shares."""

"""frontend stage of the Step-Audio-EditX data path."""

//! The background tasks (Sonic, loudness, media analysis, deep analysis, markers, voice activity,
//! chapter thumbnails, BIF) as plain data: names, activity types, the prefs that gate them and the
//! butler names that start them (plex.md §3). It imports nothing from the crate, so the job queue
//! (`state`), the task runner (`analysis`) and the API (`http`) all name tasks without a cycle.

/// A background task. Activity type strings marked (invented) in `activity_type` are not known
/// from real Plex; see the README's divergences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    Sonic,
    Loudness,
    MediaAnalysis,
    DeepAnalysis,
    IntroMarkers,
    CreditsMarkers,
    AdMarkers,
    VoiceActivity,
    ChapterThumbs,
    Bif,
}

pub const ALL: [Task; 10] = [
    Task::Sonic,
    Task::Loudness,
    Task::MediaAnalysis,
    Task::DeepAnalysis,
    Task::IntroMarkers,
    Task::CreditsMarkers,
    Task::AdMarkers,
    Task::VoiceActivity,
    Task::ChapterThumbs,
    Task::Bif,
];

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Sonic => "sonic",
            Task::Loudness => "loudness",
            Task::MediaAnalysis => "media-analysis",
            Task::DeepAnalysis => "deep-analysis",
            Task::IntroMarkers => "intro-markers",
            Task::CreditsMarkers => "credits-markers",
            Task::AdMarkers => "ad-markers",
            Task::VoiceActivity => "voice-activity",
            Task::ChapterThumbs => "chapter-thumbs",
            Task::Bif => "bif",
        }
    }

    pub fn from_name(s: &str) -> Option<Task> {
        ALL.into_iter().find(|t| t.name() == s)
    }

    /// `/activities` `type`.
    pub fn activity_type(self) -> &'static str {
        match self {
            Task::Sonic => "media.generate.music.analysis", // weak public hint, plex.md §4
            Task::Loudness => "media.generate.loudness",    // invented
            Task::MediaAnalysis => "media.analyze",         // seen in public code
            Task::DeepAnalysis => "media.analyze.deep",     // invented
            Task::IntroMarkers => "media.generate.intros",  // seen
            Task::CreditsMarkers => "media.generate.credits", // seen
            Task::AdMarkers => "media.generate.ads",        // invented
            Task::VoiceActivity => "media.generate.vad",    // invented
            Task::ChapterThumbs => "media.generate.chapter.thumbs", // seen
            Task::Bif => "media.generate.bif",              // seen
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Task::Sonic => "Analyzing audio tracks for sonic features",
            Task::Loudness => "Analyzing audio tracks for loudness",
            Task::MediaAnalysis => "Analyzing media",
            Task::DeepAnalysis => "Performing extensive media analysis",
            Task::IntroMarkers => "Detecting intros",
            Task::CreditsMarkers => "Detecting credits",
            Task::AdMarkers => "Detecting ads",
            Task::VoiceActivity => "Generating voice activity data",
            Task::ChapterThumbs => "Generating chapter thumbnails",
            Task::Bif => "Generating video preview thumbnails",
        }
    }

    /// The `*Behavior` pref that gates the task (§3.2).
    pub fn behavior_pref(self) -> Option<&'static str> {
        match self {
            Task::Sonic => Some("MusicAnalysisBehavior"),
            Task::Loudness => Some("LoudnessAnalysisBehavior"),
            Task::IntroMarkers => Some("GenerateIntroMarkerBehavior"),
            Task::CreditsMarkers => Some("GenerateCreditsMarkerBehavior"),
            Task::AdMarkers => Some("GenerateAdMarkerBehavior"),
            Task::VoiceActivity => Some("GenerateVADBehavior"),
            Task::ChapterThumbs => Some("GenerateChapterThumbBehavior"),
            Task::Bif => Some("GenerateBIFBehavior"),
            Task::MediaAnalysis | Task::DeepAnalysis => None,
        }
    }

    /// The `ButlerTask*` bool pref that enables it in the maintenance window (§3.2).
    pub fn butler_pref(self) -> Option<&'static str> {
        match self {
            Task::MediaAnalysis => Some("ButlerTaskUpgradeMediaAnalysis"),
            Task::DeepAnalysis => Some("ButlerTaskDeepMediaAnalysis"),
            Task::Bif => Some("ButlerTaskGenerateMediaIndexFiles"),
            _ => None,
        }
    }

    /// The `/butler/{name}` task names (spec enum, §3.3) that start it.
    pub fn for_butler_name(name: &str) -> Option<Vec<Task>> {
        Some(match name {
            "MusicAnalysis" => vec![Task::Sonic],
            "LoudnessAnalysis" => vec![Task::Loudness],
            "UpgradeMediaAnalysis" => vec![Task::MediaAnalysis],
            // cloud-bursting saw Sonic start only after DeepMediaAnalysis (§3.4, [S]).
            "DeepMediaAnalysis" => vec![Task::DeepAnalysis, Task::Sonic],
            "ButlerTaskGenerateIntroMarkers" => vec![Task::IntroMarkers],
            "ButlerTaskGenerateCreditsMarkers" => vec![Task::CreditsMarkers],
            "ButlerTaskGenerateAdMarkers" => vec![Task::AdMarkers],
            "ButlerTaskGenerateVoiceActivity" => vec![Task::VoiceActivity],
            "GenerateChapterThumbs" => vec![Task::ChapterThumbs],
            "GenerateMediaIndexFiles" => vec![Task::Bif],
            _ => return None,
        })
    }

    /// Section types (1/2/8/13) the task applies to.
    pub fn section_types(self) -> &'static [i64] {
        match self {
            Task::Sonic | Task::Loudness => &[8],
            Task::MediaAnalysis => &[1, 2, 8, 13],
            Task::IntroMarkers => &[2],
            _ => &[1, 2],
        }
    }
}
